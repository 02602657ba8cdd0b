"""Regenerate the top-level BUILD from the source tree.

    .venv/bin/python tools/bazel/sync_build.py          # rewrite BUILD
    .venv/bin/python tools/bazel/sync_build.py --check  # exit 1 if BUILD would change

Use it when tests/test_build_file.py says BUILD is out of step, then review the
diff and run scripts/bazel_check.sh. What it derives:
- one py_library per package (//:bgan_tf, //:flags, //:export_lib) with every
  .py file of the package; deps from the first-party imports of its modules
  (a binary's main is left to the binary, see tests/test_build_file.py);
- a py_binary for every module with `if __name__ == "__main__":`;
- //:test_support for tests/*.py that are not test files (conftest, helpers);
- a pytest_test per tests/test_*.py with deps from its imports. A test is heavy
  (size "large", tags ["manual"]: `bazel test //...` skips it) when it can reach
  one of HEAVY_IMPORTS through its imports (any depth, lazy imports included,
  pytest.importorskip too), or imports subprocess itself.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"bgan_tf": "bgan_tf", "flags": "flags", "export": "export_lib"}
HEAVY_IMPORTS = {
    "tensorflow", "keras", "tf_keras", "torch", "torchvision", "tensorflow_datasets",
    "tensorflow_serving", "ai_edge_litert", "tflite_runtime", "playwright",
    "milvus_lite", "pymilvus",
}
HEAVY_IN_TEST = {"subprocess"}  # only when the test file itself imports it

HEADER = '''\
# Bazel targets for bgan_tf, checked offline by scripts/bazel_check.sh and kept
# in step with the code by tests/test_build_file.py. After adding a module or a
# test, run `.venv/bin/python tools/bazel/sync_build.py` and review the diff.
#
# Rule (enforced by tests/test_build_file.py):
# - every .py file under bgan_tf/, flags/ and export/ is in the srcs of exactly
#   one py_library, its package's: //:bgan_tf, //:flags or //:export_lib;
# - a py_binary has exactly one src, its `main`; that file is a module of a
#   library the binary lists in deps (so a binary's main also appears in a
#   library's srcs), and every module with `if __name__ == "__main__"` has one;
# - every tests/test_*.py has a pytest_test (a py_test) named after the file;
#   other tests/*.py (conftest, helpers) belong to //:test_support;
# - every file named in srcs/data exists, every ":label" in deps is defined, and
#   every first-party import of a target's files is within its transitive deps.
# Heavy tests (TensorFlow, browsers, subprocesses) are size = "large" with
# tags = ["manual"], so `bazel test //...` runs only the light ones.

load("//tools/bazel:pytest.bzl", "pytest_test")

package(default_visibility = ["//visibility:public"])

exports_files(["pyproject.toml"])
'''


def py_files(top: str) -> list[str]:
    base = ROOT / top
    if not base.is_dir():
        return []
    return sorted(
        p.relative_to(ROOT).as_posix() for p in base.rglob("*.py") if "__pycache__" not in p.parts
    )


def has_data_files(top: str) -> bool:
    """Whether the package ships non-Python files (templates, configs...)."""
    return any(
        p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
        for p in (ROOT / top).rglob("*")
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


def fmt_list(items, indent=8) -> str:
    if not items:
        return "[]"
    if len(items) == 1:
        return f'["{items[0]}"]'
    pad = " " * indent
    return "[\n" + "".join(f'{pad}"{i}",\n' for i in items) + " " * (indent - 4) + "]"


def generate() -> str:
    modules = {}  # dotted module name -> path
    library_of = {}  # path -> library name
    for top, lib in PACKAGES.items():
        for path in py_files(top):
            modules[module_name(path)] = path
            library_of[path] = lib
    tests = [p for p in py_files("tests") if Path(p).name.startswith("test_")]
    support = [p for p in py_files("tests") if p not in tests]
    for path in support:
        modules[module_name(path)] = path
        library_of[path] = "test_support"
    mains = [p for p in library_of if p in modules.values() and has_main_block(p)
             and not p.startswith("tests/")]

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

    def dep_libs(paths, own=None):
        libs = {library_of[d] for p in paths for d in first_party(p)}
        libs.discard(own)
        return sorted(f":{lib}" for lib in libs)

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

    out = [HEADER]
    for top, lib in PACKAGES.items():
        srcs = py_files(top)
        if not srcs:
            continue
        deps = dep_libs([p for p in srcs if p not in mains], own=lib)
        out.append(f'\npy_library(\n    name = "{lib}",\n    srcs = {fmt_list(srcs)},\n')
        if has_data_files(top):
            out.append(f'    data = glob(\n        ["{top}/**"],\n'
                       '        exclude = ["**/*.py", "**/*.pyc", "**/__pycache__/**"],\n    ),\n')
        if deps:
            out.append(f"    deps = {fmt_list(deps)},\n")
        out.append('    srcs_version = "PY3",\n)\n')
    if support:
        deps = dep_libs(support, own="test_support")
        out.append(f'\npy_library(\n    name = "test_support",\n    testonly = True,\n'
                   f"    srcs = {fmt_list(support)},\n")
        if deps:
            out.append(f"    deps = {fmt_list(deps)},\n")
        out.append('    srcs_version = "PY3",\n)\n')

    used = set(PACKAGES.values()) | {"test_support"} | {Path(t).stem for t in tests}
    for path in mains:
        stem = Path(path).stem if not path.endswith("__main__.py") else Path(path).parent.name
        name = stem if stem not in used else f"{path.split('/')[0]}_{stem}"
        used.add(name)
        deps = sorted(set(dep_libs([path])) | {f":{library_of[path]}"})
        out.append(f'\npy_binary(\n    name = "{name}",\n    srcs = ["{path}"],\n'
                   f'    main = "{path}",\n    deps = {fmt_list(deps)},\n'
                   '    python_version = "PY3",\n    srcs_version = "PY3",\n)\n')

    conftest = "tests/conftest.py" in support
    for path in tests:
        name = Path(path).stem
        deps = set(dep_libs([path]))
        if conftest:
            deps.add(":test_support")
        lines = [f'    name = "{name}",\n']
        if deps:
            lines.append(f"    deps = {fmt_list(sorted(deps))},\n")
        if name == "test_build_file":
            out.append("\n# Pure-Python check of this file against the source tree. It reads the tree\n"
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
    text = generate()
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
