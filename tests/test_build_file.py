"""BUILD stays in step with the code (pure Python, no Bazel needed).

BUILD (and the .bzl files it loads) is Starlark, whose syntax is a subset of
Python's: it is executed here with fake rule functions that record each
target. The rules enforced (also written at the top of BUILD):

1. One py_library per wing. The wing of a file comes from its path alone:
   bgan_tf/<sub>/... -> //:<sub> (a new subpackage gets its own library),
   except bgan_tf/configs/ and the modules directly in bgan_tf/ -> //:core;
   flags/ -> //:flags; export/ -> //:export_lib. Every .py file there that is
   not a binary's main is in the srcs of exactly one py_library, its wing's.
2. Every module with a top-level `if __name__ == "__main__":` (or named
   __main__.py) is a binary's main: it has a py_binary that names it as `main`
   and has exactly that one file in srcs, and it is in the srcs of no other
   target (no py_library, no second binary).
3. Every tests/**/test_*.py (tests/<wing>/ mirrors the wings) has exactly one
   py_test whose srcs include it; the other .py files under tests/ (conftest.py
   files, helpers) are in a py_library, and the one holding tests/conftest.py
   is a dependency of every py_test. Basenames under tests/ are unique (but
   conftest.py): pytest imports test files and helpers by name.
4. Every file named in srcs, data or main exists; every label in deps (and in
   test_suite tests) is a target defined in BUILD.
5. Every first-party module (bgan_tf, flags, export, test helpers) that a
   target's files import, anywhere in the file, is in the srcs of the target
   itself or of one of its transitive deps. This is checked per module, with
   the parent packages' __init__.py files, and for every target alike,
   binaries included: a file importing bgan_tf.search.store needs //:search
   (and //:core for bgan_tf/__init__.py).

When this fails after adding a module, run tools/bazel/sync_build.py (or edit
BUILD as the message says); scripts/bazel_check.sh then checks it with a real
Bazel.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Under `bazel test` this file is a symlink in a runfiles tree that holds only
# declared inputs: resolve it to reach the real source tree.
ROOT = Path(__file__).resolve().parent.parent

FIRST_PARTY = ("bgan_tf", "flags", "export")  # top-level packages with one library per wing
RULE_KINDS = ("py_library", "py_binary", "py_test", "test_suite", "filegroup")


@dataclass
class Target:
    kind: str
    name: str
    attrs: dict = field(default_factory=dict)

    def files(self, attr: str) -> list[str]:
        """Repo-relative paths of the file labels in `attr` (targets left out)."""
        out = []
        for label in _as_list(self.attrs.get(attr)):
            path = _label_to_path(label)
            if path is not None:
                out.append(path)
        return out


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _label_to_path(label: str) -> str | None:
    """'bgan_tf/x.py' or '//tools/bazel:x.py' -> repo path; None for ':target'."""
    if label.startswith(":") or label.startswith("@"):
        return None
    if label.startswith("//"):
        pkg, _, name = label[2:].partition(":")
        if not name:
            return None
        return f"{pkg}/{name}" if pkg else name
    return label


def _target_name(label: str) -> str | None:
    """':x' or '//:x' -> 'x'; None for anything else."""
    if label.startswith("//:"):
        return label[3:]
    if label.startswith(":"):
        return label[1:]
    return None


def _glob(include, exclude=(), exclude_directories=1, allow_empty=True):
    del exclude_directories, allow_empty
    found = set()
    for pattern in include:
        for path in ROOT.glob(pattern):
            if path.is_file():
                found.add(path.relative_to(ROOT).as_posix())
    return sorted(
        p for p in found if not any(fnmatch.fnmatch(p, e) or _glob_match(p, e) for e in exclude)
    )


def _glob_match(path: str, pattern: str) -> bool:
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None


def load_build(path: Path = ROOT / "BUILD") -> dict[str, Target]:
    """Executes BUILD with fake rules and returns its targets by name."""
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    for node in tree.body:
        ok = isinstance(node, ast.Assign) or (
            isinstance(node, ast.Expr) and isinstance(node.value, (ast.Call, ast.Constant))
        )
        assert ok, f"BUILD:{node.lineno}: only rule calls and assignments belong in BUILD"

    targets: dict[str, Target] = {}

    def rule(kind):
        def record(name, **attrs):
            assert name not in targets, f"BUILD: target {name!r} defined twice"
            targets[name] = Target(kind, name, attrs)

        record.__name__ = kind
        return record

    rules = {kind: rule(kind) for kind in RULE_KINDS}
    noop = lambda *args, **kwargs: None  # noqa: E731
    native = types.SimpleNamespace(glob=_glob, package_name=lambda: "", **rules)
    env: dict = dict(rules, glob=_glob, package=noop, exports_files=noop, licenses=noop)

    def load(label, *symbols, **aliases):
        bzl = ROOT / _label_to_path(label)
        module = {"native": native, "__name__": bzl.stem}
        exec(compile(bzl.read_text(), str(bzl), "exec"), module)
        for symbol in symbols:
            env[symbol] = module[symbol]
        for alias, symbol in aliases.items():
            env[alias] = module[symbol]

    env["load"] = load
    exec(compile(tree, str(path), "exec"), env)
    return targets


@pytest.fixture(scope="module")
def targets() -> dict[str, Target]:
    return load_build()


def _of_kind(targets, kind):
    return [t for t in targets.values() if t.kind == kind]


def _py_files(top: str) -> list[str]:
    base = ROOT / top
    if not base.is_dir():
        return []
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in base.rglob("*.py")
        if "__pycache__" not in p.parts
    )


def _module_files() -> list[str]:
    return [f for top in FIRST_PARTY for f in _py_files(top)]


def _wing_library(path: str) -> str:
    """The py_library a first-party file belongs in, from its path alone."""
    top, *rest = path.split("/")
    if top == "flags":
        return "flags"
    if top == "export":
        return "export_lib"
    assert top == "bgan_tf", path
    if len(rest) == 1 or rest[0] == "configs":
        return "core"
    return rest[0]


def _has_main_block(path: str) -> bool:
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


def _mains() -> set[str]:
    return {path for path in _module_files() if _has_main_block(path)}


def test_build_parses(targets):
    assert targets, "BUILD defines no targets"
    for name in sorted({_wing_library(p) for p in _module_files()}):
        if name in targets:
            assert targets[name].kind == "py_library", f"//:{name} must be a py_library"


def test_every_module_is_in_exactly_one_library(targets):
    libraries = _of_kind(targets, "py_library")
    mains = _mains()
    problems = []
    for path in _module_files():
        owners = [t.name for t in libraries if path in t.files("srcs")]
        if path in mains:
            if owners:
                problems.append(
                    f"{path}: is a binary's main (it has `if __name__ == \"__main__\"`) but is "
                    f"in py_library srcs of {owners}; a main belongs to its py_binary only"
                )
            continue
        want = _wing_library(path)
        if owners != [want]:
            problems.append(
                f"{path}: in py_library srcs of {owners or 'none'}; "
                f"it belongs in exactly one: //:{want}"
            )
    assert not problems, "BUILD is out of step with the code:\n" + "\n".join(problems)


def test_binaries_are_thin_and_complete(targets):
    binaries = _of_kind(targets, "py_binary")
    problems = []
    for binary in binaries:
        main = binary.attrs.get("main")
        if not main:
            problems.append(f"py_binary {binary.name}: set main explicitly")
            continue
        main_path = _label_to_path(main)
        if binary.files("srcs") != [main_path]:
            problems.append(f"py_binary {binary.name}: srcs must be exactly [{main!r}]")
        others = [
            f"{t.kind} {t.name}"
            for t in targets.values()
            if t is not binary and main_path in t.files("srcs")
        ]
        if others:
            problems.append(
                f"py_binary {binary.name}: its main {main_path} is also in the srcs of "
                f"{', '.join(others)}; a main belongs to its py_binary only"
            )
    mains = {_label_to_path(b.attrs["main"]) for b in binaries if b.attrs.get("main")}
    for path in sorted(_mains() - mains):
        problems.append(f"{path} has `if __name__ == \"__main__\"` but no py_binary with main = "
                        f"{path!r}")
    assert not problems, "\n".join(problems)


def test_every_test_file_has_a_py_test(targets):
    tests = _of_kind(targets, "py_test")
    libraries = _of_kind(targets, "py_library")
    problems = []
    for path in _py_files("tests"):
        if fnmatch.fnmatch(Path(path).name, "test_*.py"):
            owners = [t.name for t in tests if path in t.files("srcs")]
            if len(owners) != 1:
                stem = Path(path).stem
                src = "" if path == f"tests/{stem}.py" else f', src = "{path}"'
                problems.append(
                    f"{path}: needs exactly one py_test (found {owners or 'none'}); "
                    f'add pytest_test(name = "{stem}"{src}, deps = [...]) to BUILD '
                    "(tools/bazel/sync_build.py does)"
                )
        else:
            if not any(path in lib.files("srcs") for lib in libraries):
                problems.append(f"{path}: add it to a py_library (e.g. //:test_support)")
    stems: dict[str, list[str]] = {}
    for path in _py_files("tests"):
        if Path(path).name != "conftest.py":
            stems.setdefault(Path(path).stem, []).append(path)
    for stem, paths in sorted(stems.items()):
        if len(paths) > 1:
            problems.append(f"{' and '.join(paths)} share the basename {stem}.py; pytest imports "
                            "them by name: rename all but one")
    conftest = "tests/conftest.py"
    homes = {t.name for t in libraries if conftest in t.files("srcs")}
    if homes:
        for test in tests:
            if not homes & _closure(targets, test.name):
                problems.append(f"py_test {test.name}: deps must include {sorted(homes)[0]}")
    assert not problems, "\n".join(problems)


def test_referenced_files_exist(targets):
    missing = []
    for target in targets.values():
        for attr in ("srcs", "data", "main"):
            for path in target.files(attr):
                if path not in targets and not (ROOT / path).exists():
                    missing.append(f"{target.kind} {target.name}: {attr} names missing {path}")
    assert not missing, "\n".join(missing)


def test_dep_labels_are_defined(targets):
    bad = []
    for target in targets.values():
        for attr in ("deps", "tests"):
            for label in _as_list(target.attrs.get(attr)):
                name = _target_name(label)
                if name is None or name not in targets:
                    bad.append(f"{target.kind} {target.name}: {attr} label {label!r} is not "
                               "a target defined in BUILD")
    assert not bad, "\n".join(bad)


def _closure(targets, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in targets:
            continue
        seen.add(current)
        todo.extend(
            n for n in map(_target_name, _as_list(targets[current].attrs.get("deps"))) if n
        )
    return seen


def _module_file(dotted: str, importer: str = "") -> str | None:
    """The first-party file that `import dotted` loads, or None (third-party,
    or an attribute rather than a module). A file under tests/ imports helpers
    by their stem from its own folder (pytest puts a test file's folder on
    sys.path) or from tests/ (put there when tests/conftest.py is loaded)."""
    parts = dotted.split(".")
    if parts[0] in FIRST_PARTY:
        base = "/".join(parts)
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if (ROOT / candidate).is_file():
                return candidate
        return None
    if len(parts) == 1 and importer.startswith("tests/"):
        for folder in dict.fromkeys([str(Path(importer).parent), "tests"]):
            candidate = f"{folder}/{dotted}.py"
            if (ROOT / candidate).is_file():
                return candidate
    return None


def _imported_modules(path: str) -> dict[str, str]:
    """First-party files the file at `path` imports (anywhere in it), each
    mapped to the dotted name by which it is reached. Importing a.b.c loads
    a/__init__.py and a/b/__init__.py too, and `from a.b import c` may import
    the module a/b/c.py."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    if path.startswith("tests/"):
        package: list[str] = []
    else:
        package = path.removesuffix(".py").split("/")[:-1]  # the file's own package
    dotted = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, up level - 1
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module:
                dotted.add(module)
                dotted.update(f"{module}.{alias.name}" for alias in node.names)
        elif (  # pytest.importorskip("bgan_tf.x") imports too
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            dotted.add(node.args[0].value)
    found: dict[str, str] = {}
    for name in sorted(dotted):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            file = _module_file(prefix, path)
            if file and file != path:
                found.setdefault(file, prefix)
    return found


def test_first_party_imports_are_in_deps(targets):
    providers: dict[str, set[str]] = {}  # file -> targets with it in srcs
    for target in targets.values():
        if target.kind.startswith("py_"):
            for path in target.files("srcs"):
                providers.setdefault(path, set()).add(target.name)
    problems = []
    for target in targets.values():
        if not target.kind.startswith("py_"):
            continue
        closure = _closure(targets, target.name)
        for path in target.files("srcs"):
            if not path.endswith(".py") or not (ROOT / path).is_file():
                continue
            for file, name in sorted(_imported_modules(path).items()):
                libs = providers.get(file, set())
                if not libs:
                    problems.append(
                        f"{target.kind} {target.name}: {path} imports {name} ({file}), "
                        "which no target in BUILD has in its srcs"
                    )
                elif not libs & closure:
                    problems.append(
                        f"{target.kind} {target.name}: {path} imports {name} ({file}); "
                        f"add {' or '.join(':' + lib for lib in sorted(libs))} to its deps"
                    )
    assert not problems, "\n".join(problems)
