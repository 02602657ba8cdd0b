"""Regenerate the top-level BUILD from the source tree.

    .venv/bin/python tools/bazel/sync_build.py          # rewrite BUILD
    .venv/bin/python tools/bazel/sync_build.py --check  # exit 1 if BUILD would change

Use it when tests/test_build_file.py says BUILD is out of step, then review the
diff and run scripts/bazel_check.sh. What it derives:
- one py_library per wing, named after it (see wing_of): //:core (the modules
  directly in bgan_tf/ and bgan_tf/configs/), one per subpackage bgan_tf/<sub>/
  (//:modeling, //:data, ..., a new subpackage gets its own), //:flags and
  //:export_lib. A library holds every .py file of its wing except binaries'
  mains; its deps are the targets holding the first-party modules its files
  import (module granularity, parent packages' __init__.py included);
- a py_binary for every module with `if __name__ == "__main__":`, whose srcs is
  just that main (it is in no library) and whose deps are the targets its main
  imports. Names: the path without bgan_tf/ and .py, "/" -> "_" (train,
  export_all, ...), with "_bin" appended if that clashes with another target;
- //:test_support for the .py files under tests/ that are not test files
  (conftest.py files, helpers);
- a pytest_test per tests/**/test_*.py, named after the file (basenames under
  tests/ are unique: pytest imports them by name), with `src` when the file is
  not tests/<name>.py, and deps from its imports. A test is heavy
  (size "large", tags ["manual"]: `bazel test //...` skips it) when it can reach
  one of HEAVY_IMPORTS through its imports (any depth, lazy imports included,
  pytest.importorskip too), or imports subprocess itself.
A dependency cycle between targets (Bazel rejects those) is reported with the
imports that make it, and BUILD is left unchanged: break the cycle in the code.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("bgan_tf", "flags", "export")  # first-party packages, in BUILD order
CORE = "core"
CORE_SUBPACKAGES = {"configs"}  # subpackages of bgan_tf/ that belong to //:core
TOP_LIBRARY = {"flags": "flags", "export": "export_lib"}
TEST_SUPPORT = "test_support"
HEAVY_IMPORTS = {
    "tensorflow", "keras", "tf_keras", "torch", "torchvision", "tensorflow_datasets",
    "tensorflow_serving", "ai_edge_litert", "tflite_runtime", "playwright",
    "milvus_lite", "pymilvus",
}
HEAVY_IN_TEST = {"subprocess"}  # only when the test file itself imports it
# Pure-Python checks that read the whole source tree (through their resolved
# path) rather than their declared inputs: tagged "external", never cached.
TREE_CHECKS = {
    "test_build_file": "BUILD against the source tree",
    "test_architecture": "the wing import order and module sizes",
}

HEADER = '''\
# Bazel targets for bgan_tf, checked offline by scripts/bazel_check.sh and kept
# in step with the code by tests/test_build_file.py. After adding a module or a
# test, run `.venv/bin/python tools/bazel/sync_build.py` and review the diff.
#
# Rule (enforced by tests/test_build_file.py):
# - one py_library per wing: //:core holds bgan_tf/*.py and bgan_tf/configs/;
#   each other subpackage bgan_tf/<sub>/ has //:<sub> (//:modeling, //:data,
#   //:inference, //:training, //:evaluation, //:serving, //:search, ...);
#   flags/ is //:flags and export/ is //:export_lib. Every .py file there that
#   is not a binary's main is in the srcs of exactly one py_library, its wing's;
# - every module with `if __name__ == "__main__"` has a py_binary whose srcs is
#   exactly [its main]; a main is in no py_library (nor in any other target);
# - every tests/**/test_*.py has a pytest_test (a py_test) named after the file
#   (tests/<wing>/ mirrors the wings); the other .py files under tests/
#   (conftest.py files, helpers) belong to //:test_support;
# - every file named in srcs/data exists, every ":label" in deps is defined, and
#   every first-party module a target's files import (at any depth in the
#   file, with its parent packages) is in the srcs of the target itself or of
#   one of its transitive deps. No exceptions: binaries, libraries and tests
#   alike (deps are computed per module: importing bgan_tf.search.store needs
#   //:search, bgan_tf.errors needs //:core).
# Heavy tests (TensorFlow, browsers, subprocesses) are size = "large" with
# tags = ["manual"], so `bazel test //...` runs only the light ones.

load("//tools/bazel:pytest.bzl", "pytest_test")

package(default_visibility = ["//visibility:public"])

exports_files(["pyproject.toml"])
'''


class CycleError(Exception):
    """The targets' deps would form a cycle."""


def py_files(top: str) -> list[str]:
    base = ROOT / top
    if not base.is_dir():
        return []
    return sorted(
        p.relative_to(ROOT).as_posix() for p in base.rglob("*.py") if "__pycache__" not in p.parts
    )


def wing_of(path: str) -> str:
    """The library a first-party file belongs to, from its path alone:
    bgan_tf/<sub>/... -> <sub> (configs -> core), bgan_tf/x.py -> core,
    flags/ -> flags, export/ -> export_lib, helpers under tests/ -> test_support."""
    parts = path.split("/")
    if parts[0] == "bgan_tf":
        if len(parts) == 2 or parts[1] in CORE_SUBPACKAGES:
            return CORE
        return parts[1]
    if parts[0] in TOP_LIBRARY:
        return TOP_LIBRARY[parts[0]]
    if parts[0] == "tests":
        return TEST_SUPPORT
    raise ValueError(f"{path} is not first-party code")


def wing_dirs(wing: str) -> list[str]:
    """Glob patterns of the folders a wing owns (for its data files)."""
    if wing == CORE:
        return ["bgan_tf/*"] + [f"bgan_tf/{sub}/**" for sub in sorted(CORE_SUBPACKAGES)]
    top = {lib: top for top, lib in TOP_LIBRARY.items()}.get(wing)
    return [f"{top}/**"] if top else [f"bgan_tf/{wing}/**"]


def data_files_of(wing: str) -> bool:
    """Whether the wing ships non-Python files (templates, configs...)."""
    return any(
        p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
        for top in TOPS
        for p in (ROOT / top).rglob("*")
        if wing_of(p.relative_to(ROOT).as_posix()) == wing
    )


def module_name(path: str) -> str:
    if path.startswith("tests/"):
        return Path(path).stem
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: str) -> set[str]:
    """Dotted names the file imports (relative imports resolved), including
    pytest.importorskip("name") calls."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module:
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def has_main_block(path: str) -> bool:
    if path.endswith("/__main__.py"):
        return True
    tree = ast.parse((ROOT / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {
                n.id if isinstance(n, ast.Name) else getattr(n, "value", None)
                for n in [node.test.left, *node.test.comparators]
            }
            if {"__name__", "__main__"} <= names:
                return True
    return False


def binary_name(path: str, used: set[str]) -> str:
    """bgan_tf/train.py -> train, export/all.py -> export_all,
    bgan_tf/search/__main__.py -> search_bin (//:search is the library)."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__main__":
        parts = parts[:-1]
    if parts[0] == "bgan_tf" and len(parts) > 1:
        parts = parts[1:]
    name = "_".join(parts)
    if name in used:
        name += "_bin"
    if name in used:
        raise ValueError(f"{path}: no free target name for its py_binary ({name} is taken)")
    return name


def fmt_list(items, indent=8) -> str:
    if not items:
        return "[]"
    if len(items) == 1:
        return f'["{items[0]}"]'
    pad = " " * indent
    return "[\n" + "".join(f'{pad}"{i}",\n' for i in items) + " " * (indent - 4) + "]"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list [a, b, ..., a] of targets that depend on each other, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def generate() -> str:
    modules = {}  # dotted module name -> path
    for top in TOPS:
        for path in py_files(top):
            modules[module_name(path)] = path
    tests = [p for p in py_files("tests") if Path(p).name.startswith("test_")]
    support = [p for p in py_files("tests") if p not in tests]
    stems: dict[str, str] = {}
    for path in tests + support:
        if Path(path).name == "conftest.py":
            continue  # pytest imports each conftest.py by its path
        if Path(path).stem in stems:
            raise ValueError(f"{path} and {stems[Path(path).stem]} share a basename; pytest imports "
                             "test files and helpers by name, so rename one")
        stems[Path(path).stem] = path
    for path in support:  # a conftest.py is imported by no module: keyed by its path
        modules[path if Path(path).name == "conftest.py" else module_name(path)] = path
    mains = [p for top in TOPS for p in py_files(top) if has_main_block(p)]

    # Which target holds each first-party file: its wing's library, or for a
    # binary's main, the binary.
    target_of = {path: wing_of(path) for path in modules.values()}
    libraries: dict[str, list[str]] = {}
    for path in sorted(modules.values()):
        if path not in mains:
            libraries.setdefault(target_of[path], []).append(path)
    lib_order = (
        [CORE]
        + sorted(w for w in libraries if w not in (CORE, TEST_SUPPORT, *TOP_LIBRARY.values()))
        + [lib for lib in TOP_LIBRARY.values() if lib in libraries]
    )
    used = set(libraries) | {Path(t).stem for t in tests}
    for path in mains:
        target_of[path] = name = binary_name(path, used)
        used.add(name)

    def first_party(path):
        """Paths of first-party modules imported by `path` (with parent packages)."""
        out = set()
        for name in imports_of(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = modules.get(".".join(parts[:i]))
                if target:
                    out.add(target)
        out.discard(path)
        return out

    def dep_targets(paths, own=None):
        return {target_of[d] for p in paths for d in first_party(p)} - {own}

    def heavy(path, seen=None):
        """Whether `path` may load a heavy package: any import, even inside a
        function, of it or of the first-party modules it reaches counts."""
        seen = set() if seen is None else seen
        if path in seen:
            return False
        seen.add(path)
        if {n.split(".")[0] for n in imports_of(path)} & HEAVY_IMPORTS:
            return True
        return any(heavy(d, seen) for d in first_party(path))

    srcs_of = dict(libraries)
    srcs_of.update({target_of[m]: [m] for m in mains})
    graph = {name: dep_targets(srcs, own=name) for name, srcs in srcs_of.items()}
    cycle = find_cycle(graph)
    if cycle:
        lines = []
        for a, b in zip(cycle, cycle[1:]):
            why = sorted(
                f"{p} imports {d}" for p in srcs_of[a] for d in first_party(p) if target_of[d] == b
            )
            # Parent packages' __init__.py come with every import: name the modules.
            why = [w for w in why if not w.endswith("__init__.py")] or why
            lines.append(f"  :{a} -> :{b} because " + "; ".join(why))
        raise CycleError("dependency cycle " + " -> ".join(f":{t}" for t in cycle)
                         + ":\n" + "\n".join(lines))

    def labels(names):
        return sorted(f":{n}" for n in names)

    out = [HEADER]
    for lib in lib_order:
        deps = labels(graph[lib])
        out.append(f'\npy_library(\n    name = "{lib}",\n    srcs = {fmt_list(libraries[lib])},\n')
        if data_files_of(lib):
            patterns = ", ".join(f'"{p}"' for p in wing_dirs(lib))
            out.append(f'    data = glob(\n        [{patterns}],\n'
                       '        exclude = ["**/*.py", "**/*.pyc", "**/__pycache__/**"],\n    ),\n')
        if deps:
            out.append(f"    deps = {fmt_list(deps)},\n")
        out.append('    srcs_version = "PY3",\n)\n')
    if support:
        deps = labels(graph[TEST_SUPPORT])
        out.append(f'\npy_library(\n    name = "{TEST_SUPPORT}",\n    testonly = True,\n'
                   f"    srcs = {fmt_list(support)},\n")
        if deps:
            out.append(f"    deps = {fmt_list(deps)},\n")
        out.append('    srcs_version = "PY3",\n)\n')

    for path in mains:
        name = target_of[path]
        deps = labels(graph[name])
        out.append(f'\npy_binary(\n    name = "{name}",\n    srcs = ["{path}"],\n'
                   f'    main = "{path}",\n')
        if deps:
            out.append(f"    deps = {fmt_list(deps)},\n")
        out.append('    python_version = "PY3",\n    srcs_version = "PY3",\n)\n')

    conftest = "tests/conftest.py" in support
    for path in tests:
        name = Path(path).stem
        deps = dep_targets([path])
        if conftest:
            deps.add(TEST_SUPPORT)
        lines = [f'    name = "{name}",\n']
        if path != f"tests/{name}.py":
            lines.append(f'    src = "{path}",\n')
        if deps:
            lines.append(f"    deps = {fmt_list(labels(deps))},\n")
        if name in TREE_CHECKS:
            out.append(f"\n# Pure-Python check of {TREE_CHECKS[name]}. It reads the tree\n"
                       "# outside its declared inputs, so it is never cached (\"external\").")
            lines.append('    tags = ["external"],\n')
        elif heavy(path) or {n.split(".")[0] for n in imports_of(path)} & HEAVY_IN_TEST:
            lines.append('    size = "large",\n    tags = ["manual"],\n')
        out.append("\npytest_test(\n" + "".join(lines) + ")\n")
    return "".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether BUILD is current")
    args = parser.parse_args(argv)
    try:
        text = generate()
    except (CycleError, ValueError) as e:
        print(f"error: {e}\nBUILD left unchanged.", file=sys.stderr)
        return 1
    build = ROOT / "BUILD"
    if args.check:
        current = build.read_text() if build.exists() else ""
        if current != text:
            print("BUILD is out of date: run tools/bazel/sync_build.py", file=sys.stderr)
            return 1
        return 0
    tmp = build.with_name("BUILD.tmp")
    tmp.write_text(text)
    tmp.replace(build)
    return 0


if __name__ == "__main__":
    sys.exit(main())
