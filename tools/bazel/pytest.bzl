"""pytest_test: a py_test that runs one test file (tests/<wing>/<name>.py) with pytest.

The project's tests are pytest modules (plain test functions), which a bare
py_test would merely import. This macro makes tools/bazel/pytest_main.py the
entry point and hands it the test file.

This file is also executed as plain Python by tests/test_build_file.py (with a
fake `native`), so keep it to the Python-compatible subset of Starlark.
"""

PYTEST_MAIN = "//tools/bazel:pytest_main.py"

def pytest_test(name, src = None, deps = [], data = [], size = "small", tags = [], **kwargs):
    """Declares py_test `name` for the file `src` (default tests/<name>.py)."""
    if not src:
        src = "tests/" + name + ".py"
    native.py_test(
        name = name,
        srcs = [src, PYTEST_MAIN],
        main = PYTEST_MAIN,
        args = ["$(location " + src + ")"],
        data = ["pyproject.toml"] + data,
        deps = deps,
        size = size,
        tags = tags,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )
