"""The wings of bgan_tf import only downwards, and library modules and functions stay short.

Pure Python: every file is parsed with ast, nothing is imported (no TensorFlow).

A *unit* is the first component under bgan_tf/: a subpackage (bgan_tf/search/)
or a module (bgan_tf/errors.py); bgan_tf/__init__.py is the unit "__init__".
The top-level packages flags/ and export/ are one unit each. Rules:

1. Every unit has a rank in RANKS below.
2. A unit imports only itself and units of a strictly lower rank: never a
   higher unit, and never a sibling of the same rank (search must not import
   serving), except at APP_RANK (binaries, flags/, export/), whose units are
   entry points and their helpers and may import each other.
3. Library code under bgan_tf/ (every module there that is not a binary, i.e.
   has no `if __name__ == "__main__":`) never imports flags/ or export/.
4. No library module (any .py file under bgan_tf/, flags/ or export/ except
   tests) is longer than MAX_LINES raw lines (as `wc -l` counts them, blank
   lines and comments included).
5. No function under bgan_tf/ is longer than MAX_FUNCTION_LINES lines.

Every import counts: module level, inside functions, under TYPE_CHECKING or
`if __name__ == "__main__":`, relative ones, and importlib.import_module /
__import__ calls whose name (or f-string prefix) is a constant.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Rank of every unit. A unit may import units of a lower rank, never one of the
# same (siblings) or a higher rank. To add a wing: create bgan_tf/<wing>/ and
# add "<wing>": rank here, one above the highest-ranked unit it must import and
# below every unit that will import it; if that is impossible, the wing is in
# the wrong place. A new binary bgan_tf/<name>.py gets APP_RANK. (BUILD gets
# its //:<wing> library from tools/bazel/sync_build.py.)
RANKS = {
    # bgan_tf/__init__.py: loaded before any bgan_tf module; at import time it imports none,
    # its PEP 562 __getattr__ loads `api` on first use of bgan_tf.load_model / open_index.
    "__init__": 8,
    "runtime": -1,  # process settings (malloc); imports no bgan_tf module; errors.cli_run applies them
    "errors": 0,
    "codes": 0,
    "atomic": 1,
    "config": 1,
    "configs": 2,
    "modeling": 2,
    "data": 3,
    "inference": 4,
    "evaluation": 5,
    "training": 6,  # above evaluation: early stopping scores held-out codes with its metrics
    "serving": 5,
    "search": 5,
    "api": 6,  # bgan_tf.load_model / open_index: encoders (inference), indexes (search), TFLite conversion (serving)
    # APP_RANK: the binaries in bgan_tf/, and the top-level packages beside it.
    "train": 7,
    "evaluate": 7,
    "index": 7,
    "serve": 7,
    "flags": 7,
    "export": 7,
}
APP_RANK = 7  # units of this rank may import each other (binaries use flags/, export/)
OUTSIDE = ("flags", "export")  # top-level packages that library code under bgan_tf/ never imports
MAX_LINES = 400  # raw lines per library module
MAX_FUNCTION_LINES = 80  # lines of one function in bgan_tf, from `def` to its last line (issue 28)


def _py_files() -> list[str]:
    out = []
    for top in ("bgan_tf", *OUTSIDE):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "__pycache__" in rel.parts or "tests" in rel.parts or rel.name.startswith("test_"):
                continue
            out.append(rel.as_posix())
    return sorted(out)


def _unit_of_file(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[0] in OUTSIDE:
        return parts[0]
    return parts[1]  # bgan_tf/<unit>.py or bgan_tf/<unit>/...; bgan_tf/__init__.py -> "__init__"


def _unit_of_import(dotted: str) -> str | None:
    """The unit a dotted module name belongs to; None if not first-party."""
    parts = dotted.split(".")
    if parts[0] in OUTSIDE:
        return parts[0]
    if parts[0] != "bgan_tf":
        return None
    if len(parts) == 1:
        return "__init__"
    name = parts[1]
    if (ROOT / "bgan_tf" / f"{name}.py").is_file() or (ROOT / "bgan_tf" / name).is_dir():
        return name
    return "__init__"  # an attribute of bgan_tf/__init__.py (from bgan_tf import __version__)


def _is_binary(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {
                n.id if isinstance(n, ast.Name) else getattr(n, "value", None)
                for n in [node.test.left, *node.test.comparators]
            }
            if {"__name__", "__main__"} <= names:
                return True
    return False


def _constant_prefix(node: ast.expr) -> str | None:
    """'a.b' for "a.b" or for f"a.b.{x}" (the dotted part before the first field)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.rsplit(".", 1)[0] if "." in first.value else None
    return None


def _imports(path: str) -> list[tuple[int, str, str]]:
    """(line, dotted name, statement) of every import in the file, relative
    ones resolved: `from a.b import c` gives a.b.c (c may be a module),
    `import a.b` gives a.b."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    package = path.removesuffix(".py").split("/")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, f"import {alias.name}") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            source = "." * node.level + (node.module or "")
            out.extend((node.lineno, f"{module}.{alias.name}" if module else alias.name,
                        f"from {source} import {alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                dotted = _constant_prefix(node.args[0])
                if dotted and not dotted.startswith("."):
                    out.append((node.lineno, dotted, f"{name}({ast.unparse(node.args[0])})"))
    return out


def test_every_unit_has_a_rank():
    missing = sorted({_unit_of_file(p) for p in _py_files()} - RANKS.keys())
    assert not missing, (
        "units with no rank (add each to RANKS at the top of tests/test_architecture.py): "
        + ", ".join(f"bgan_tf/{u}" for u in missing)
    )


def _rank_violations() -> list[str]:
    problems = []
    for path in _py_files():
        unit = _unit_of_file(path)
        if unit not in RANKS:
            continue  # reported by test_every_unit_has_a_rank
        rank = RANKS[unit]
        for line, dotted, statement in _imports(path):
            other = _unit_of_import(dotted)
            if other is None or other == unit or other not in RANKS:
                continue
            theirs = RANKS[other]
            if theirs < rank or (theirs == rank == APP_RANK):
                continue
            if theirs == rank:
                why = (f"{unit} and {other} are siblings (both rank {rank}); "
                       "siblings never import each other")
            else:
                why = (f"{unit} (rank {rank}) is below {other} (rank {theirs}); "
                       "a unit never imports a higher one")
            problems.append(f"{path}:{line} `{statement}`: {why}")
    return problems


def test_units_import_only_lower_ranks():
    problems = _rank_violations()
    assert not problems, (
        f"{len(problems)} import(s) break the wing order (RANKS in tests/test_architecture.py):\n"
        + "\n".join(problems)
    )


def test_library_code_never_imports_flags_or_export():
    problems = []
    for path in _py_files():
        if not path.startswith("bgan_tf/"):
            continue
        if _is_binary(ast.parse((ROOT / path).read_text(), filename=path)):
            continue
        for line, dotted, statement in _imports(path):
            if dotted.split(".")[0] in OUTSIDE:
                problems.append(
                    f"{path}:{line} `{statement}`: library code under bgan_tf/ never imports "
                    "flags/ or export/ (only binaries do)"
                )
    assert not problems, "\n".join(problems)


def test_library_functions_are_short():
    """Issue 28: no function or method in bgan_tf is over MAX_FUNCTION_LINES lines (its
    signature, docstring and nested functions included, decorators not): a long one is a
    sequence of stages that wants names."""
    problems = []
    for path in _py_files():
        if not path.startswith("bgan_tf/"):
            continue
        for node in ast.walk(ast.parse((ROOT / path).read_text(), filename=path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    problems.append(f"{path}:{node.lineno} {node.name}: {lines} lines, over the limit of "
                                    f"{MAX_FUNCTION_LINES}: split it into named steps")
    assert not problems, "\n".join(problems)


def test_library_modules_are_short():
    problems = []
    for path in _py_files():
        count = len((ROOT / path).read_text().splitlines())
        if count > MAX_LINES:
            problems.append(f"{path}: {count} lines, over the limit of {MAX_LINES} "
                            "(raw lines, as `wc -l` counts): split it")
    assert not problems, "\n".join(problems)


def _module_of_file(path: str) -> str:
    """bgan_tf/search/store.py -> bgan_tf.search.store; a package's __init__.py -> the package."""
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (every import counts, see the module
    docstring). `from a.b import c` is an edge to a.b.c when that is a module, else to a.b."""
    modules = {_module_of_file(p) for p in _py_files()}
    graph: dict[str, set[str]] = {}
    for path in _py_files():
        here = _module_of_file(path)
        edges = set()
        for _line, dotted, _statement in _imports(path):
            # The longest prefix that is one of our modules: a.b.c, else a.b (c an attribute).
            parts = dotted.split(".")
            for end in range(len(parts), 0, -1):
                name = ".".join(parts[:end])
                if name in modules:
                    if name != here:
                        edges.add(name)
                    break
        graph[here] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a module path a -> b -> ... -> a) per strongly connected component of
    more than one module (Tarjan's algorithm, iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(set(component))
    cycles = []
    for component in components:
        # A shortest way back to the smallest module of the component, by breadth-first search.
        start = min(component)
        came_from = {start: None}
        frontier = [start]
        end = None
        while frontier and end is None:
            nxt = []
            for node in frontier:
                for child in sorted(graph[node] & component):
                    if child == start:
                        end = node
                        break
                    if child not in came_from:
                        came_from[child] = node
                        nxt.append(child)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        node = end
        while node is not None and node != start:
            path.insert(1, node)
            node = came_from[node]
        cycles.append(path + [start])
    return cycles


def test_cycle_finder_names_a_cycle():
    """The finder itself: a -> b -> c -> a is reported as that path, a dead end is not."""
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    """Issue 28, item 5: no import cycle among the first-party modules, imports inside
    functions included (a function-level import hid search/backends.py <-> approximate.py
    and training/graph.py <-> diffusion.py). Break a cycle by moving what both sides
    share into a module below them."""
    cycles = _cycles(_import_graph())
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(" -> ".join(c) for c in cycles)
