"""Floating-point operations of a TensorFlow computation, counted from its graph.

The count is TensorFlow's own (``tf.compat.v1.profiler`` with the float-operation
options, i.e. the per-op formulas of tensorflow/python/profiler/internal/flops_registry.py:
a multiply-add is 2 operations, MatMul 2*M*N*K, Conv2D 2 * output elements * kernel
height * width * input channels, elementwise ops one per output element). It needs
static shapes, so trace with fully defined ``tf.TensorSpec``s.

Only the ops TensorFlow runs are counted: a traced graph holds the same stateless op
several times (three ``tape.gradient`` calls each rebuild the shared backward pass) and
ops nothing depends on, which grappler's common-subgraph elimination and pruning remove
before the graph runs; `executed_ops` does the same (a GAN step's graph holds ~1.5x the
work it runs). ``FlopCount.graph_total`` keeps the raw sum. Two blind spots, which
`FlopCount.uncounted` names so a caller can say so:
- float ops the registry has no formula for (activations and their gradients, Sqrt,
  resizes, ...) or whose shapes are unknown at trace time: cheap elementwise work
  next to the matmuls and convolutions, listed by type;
- bodies of control flow and function calls (``If``, ``While``, ``PartitionedCall``):
  the profiler does not look inside them.

Used by benchmarks/stage_costs.py; tests/benchmarks/test_flops.py checks it on layers
of known cost.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

# Ops whose work lives in a function body the profiler does not enter.
CALL_OPS = frozenset({"If", "StatelessIf", "While", "StatelessWhile", "PartitionedCall",
                      "StatefulPartitionedCall", "Case", "StatelessCase"})
# Float-valued ops that move, index or copy data rather than compute.
_NO_MATH = frozenset({"Placeholder", "Const", "Identity", "IdentityN", "ReadVariableOp", "Reshape", "Cast",
                      "Pack", "Unpack", "ConcatV2", "GatherV2", "StridedSlice", "Slice", "Fill", "ZerosLike",
                      "OnesLike", "ExpandDims", "Squeeze", "Transpose", "BroadcastTo", "Tile", "StopGradient",
                      "Select", "SelectV2", "EnsureShape", "Snapshot", "PreventGradient", "Pad", "PadV2",
                      "MirrorPad", "ResourceGather", "StatelessRandomNormalV2", "Merge", "Switch",
                      "StridedSliceGrad", "SplitV", "Split"})


@dataclasses.dataclass
class FlopCount:
    """Total float operations of one graph, per op, and what the count could not see."""

    total: int  # float ops of the ops that run (see executed_ops)
    graph_total: int  # of every op in the graph, duplicates and dead ops included
    by_op: dict[str, int]  # node name -> float ops (only executed ops with a nonzero count)
    op_types: dict[str, str]  # node name -> op type, for the ops in by_op
    uncounted: dict[str, int]  # op type -> how many ops of it got no count (see module doc)

    def by_type(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        for name, flops in self.by_op.items():
            out[self.op_types[name]] += flops
        return dict(out.most_common())

    def heaviest(self, op_types: tuple[str, ...]) -> str | None:
        """Name of the op of one of ``op_types`` with the most float ops (None if none)."""
        names = [n for n in self.by_op if self.op_types[n] in op_types]
        return max(names, key=lambda n: self.by_op[n]) if names else None

    def calls(self) -> str:
        """'' or e.g. '1 StatelessIf': the ops whose function bodies the count did not enter."""
        return ", ".join(f"{n} {t}" for t, n in sorted(self.uncounted.items()) if t in CALL_OPS)


def executed_ops(graph: Any) -> set[str]:
    """Names of the ops that run: one of each group of identical stateless ops (same type,
    inputs and attributes, as grappler's common-subgraph elimination merges them), and only
    those an output, a control output or a stateful op depends on (pruning)."""
    alias: dict[str, str] = {}  # tensor or op name -> the name of its kept twin
    seen: dict[tuple, Any] = {}
    kept = {}
    for op in graph.get_operations():  # creation order is a topological order
        if not op.op_def.is_stateful and op.type != "Placeholder":
            key = (op.type, tuple(alias.get(t.name, t.name) for t in op.inputs),
                   tuple(sorted(alias.get(c.name, c.name) for c in op.control_inputs)),
                   tuple((k, op.node_def.attr[k].SerializeToString(deterministic=True)) for k in sorted(op.node_def.attr)))
            twin = seen.get(key)
            if twin is not None:
                alias[op.name] = twin.name
                alias.update((a.name, b.name) for a, b in zip(op.outputs, twin.outputs))
                continue
            seen[key] = op
        kept[op.name] = op
    roots = [t.op.name for t in graph.outputs] + [o.name for o in getattr(graph, "control_outputs", [])]
    roots += [name for name, op in kept.items() if op.op_def.is_stateful]
    live: set[str] = set()
    stack = [alias.get(r, r) for r in roots]
    while stack:
        name = stack.pop()
        if name in live:
            continue
        live.add(name)
        op = kept[name]
        stack.extend(alias.get(t.name, t.name).rsplit(":", 1)[0] for t in op.inputs)
        stack.extend(alias.get(c.name, c.name) for c in op.control_inputs)
    return live


def graph_flops(graph: Any) -> FlopCount:
    """Float operations of the ops of ``graph`` (a tf.Graph or FuncGraph) that run, by TF's profiler."""
    import tensorflow as tf

    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    root = tf.compat.v1.profiler.profile(graph=graph, options=options)
    every: dict[str, int] = {}
    stack = list(root.children)
    while stack:  # scope view: one node per op name, nested by name scope
        node = stack.pop()
        if node.float_ops:
            every[node.name] = int(node.float_ops)
        stack.extend(node.children)
    run = executed_ops(graph)
    by_op = {name: flops for name, flops in every.items() if name in run}
    ops = [op for op in graph.get_operations() if op.name in run]
    op_types = {op.name: op.type for op in ops if op.name in by_op}
    # Float-valued ops with no count, and every call/control-flow op (its body is skipped).
    uncounted: collections.Counter[str] = collections.Counter(
        op.type for op in ops if op.name not in by_op and (op.type in CALL_OPS or (
            op.type not in _NO_MATH and any(t.dtype.is_floating for t in op.outputs))))
    return FlopCount(sum(by_op.values()), int(root.total_float_ops), by_op, op_types, dict(uncounted))


def function_flops(fn: Callable[..., Any], *specs: Any) -> FlopCount:
    """Float operations of one call of ``fn`` traced as a tf.function on ``specs``
    (tf.TensorSpec or nests of them, every shape fully defined)."""
    import tensorflow as tf

    concrete = tf.function(fn).get_concrete_function(*specs)
    return graph_flops(concrete.graph)
