"""Entry point of every pytest_test (tools/bazel/pytest.bzl) under `bazel test`.

Runs pytest on the test file given as the first argument (a path relative to
the runfiles tree, which is the working directory) and writes the JUnit XML
report where Bazel asks for it.

The venv has this project installed in editable mode (scripts/setup.sh), whose
import hook would quietly serve any bgan_tf/flags/export module missing from
the runfiles. It is removed first, so a missing dep in BUILD fails the test.
"""

import os
import sys


def drop_editable_installs():
    def editable(obj):
        module = getattr(obj, "__module__", None) or getattr(
            getattr(obj, "__self__", None), "__module__", ""
        )
        return str(module).startswith("__editable__")

    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path[:] = [p for p in sys.path if not str(p).startswith("__editable__")]
    sys.path_importer_cache.clear()
    for name in [n for n in sys.modules if n.startswith("__editable__")]:
        del sys.modules[name]


def main(argv):
    import pytest

    args = ["-q", "-p", "no:cacheprovider", *argv]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append("--junitxml=" + xml)
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        args.append("--basetemp=" + os.path.join(tmp, "pytest"))
    return pytest.main(args)


if __name__ == "__main__":
    drop_editable_installs()
    sys.exit(main(sys.argv[1:]))
