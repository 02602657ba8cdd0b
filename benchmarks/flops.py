"""Floating-point operations of a TensorFlow computation, counted from its graph.

The count is TensorFlow's own (``tf.compat.v1.profiler`` with the float-operation
options, i.e. the per-op formulas of tensorflow/python/profiler/internal/flops_registry.py:
a multiply-add is 2 operations, MatMul 2*M*N*K, Conv2D 2 * output elements * kernel
height * width * input channels, elementwise ops one per output element). It needs
static shapes, so trace with fully defined ``tf.TensorSpec``s. Two blind spots, which
`FlopCount.uncounted` names so a caller can say so:
- ops the registry has no formula for (FusedBatchNormV3, activations, resizes, ...):
  cheap elementwise work next to the matmuls and convolutions, listed by type;
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

    total: int
    by_op: dict[str, int]  # node name -> float ops (only ops with a nonzero count)
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


def graph_flops(graph: Any) -> FlopCount:
    """Float operations of every op of ``graph`` (a tf.Graph or FuncGraph), by TF's profiler."""
    import tensorflow as tf

    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    root = tf.compat.v1.profiler.profile(graph=graph, options=options)
    by_op: dict[str, int] = {}
    stack = list(root.children)
    while stack:  # scope view: one node per op name, nested by name scope
        node = stack.pop()
        if node.float_ops:
            by_op[node.name] = int(node.float_ops)
        stack.extend(node.children)
    ops = graph.get_operations()
    types = {op.name: op.type for op in ops}
    op_types = {name: types.get(name, "?") for name in by_op}
    # Float-valued ops with no count, and every call/control-flow op (its body is skipped).
    uncounted: collections.Counter[str] = collections.Counter(
        op.type for op in ops if op.name not in by_op and (op.type in CALL_OPS or (
            op.type not in _NO_MATH and any(t.dtype.is_floating for t in op.outputs))))
    return FlopCount(int(root.total_float_ops), by_op, op_types, dict(uncounted))


def function_flops(fn: Callable[..., Any], *specs: Any) -> FlopCount:
    """Float operations of one call of ``fn`` traced as a tf.function on ``specs``
    (tf.TensorSpec or nests of them, every shape fully defined)."""
    import tensorflow as tf

    concrete = tf.function(fn).get_concrete_function(*specs)
    return graph_flops(concrete.graph)
