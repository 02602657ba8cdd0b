"""bgan_tf.runtime: the allocator settings every binary applies, their opt-out, and the quiet
TensorFlow import."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from testlib import ROOT

_PROBE = "from bgan_tf.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


def _probe(**env: str) -> str:
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc mallopt parameters")
def test_settings_apply_once_on_glibc_and_can_be_turned_off():
    assert _probe(BGAN_TF_MALLOC_TUNING="1") == "True True"  # applied, and a second call says so
    assert _probe(BGAN_TF_MALLOC_TUNING="0") == "False False"


def test_every_binary_applies_them_before_parsing_flags():
    """cli_run is the one way binaries start; it tunes the allocator before main runs."""
    code = ("import sys; from bgan_tf import errors, runtime; "
            "errors.cli_run(lambda argv: print('tuned', runtime._tuned))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "BGAN_TF_MALLOC_TUNING": "1"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    want = "tuned True" if platform.libc_ver()[0] == "glibc" else "tuned False"
    assert proc.stdout.strip() == want


_NOISY = '''import os, sys
os.write(2, b"NOTICE from C++\\nkept: a C-level line\\n")
print("kept: a Python line", file=sys.stderr)
if os.environ.get("NOISY_FAIL"):
    raise RuntimeError("import failed")
'''


def _import_noisy(tmp_path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "noisy_pkg").mkdir()
    (tmp_path / "noisy_pkg" / "__init__.py").write_text(_NOISY)
    code = ("import sys; from bgan_tf.runtime import quiet_import; quiet_import('noisy_pkg', ['NOTICE']); "
            "import noisy_pkg; print(type(noisy_pkg.__loader__).__name__, type(noisy_pkg.__spec__.loader).__name__); "
            "print('finder gone', not any(type(f).__name__ == '_QuietFinder' for f in sys.meta_path)); "
            "sys.stderr.write('after the import\\n')")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", **env})


def test_quiet_import_drops_only_the_notice_lines_and_leaves_the_module_its_loader(tmp_path):
    proc = _import_noisy(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "kept: a C-level line\nkept: a Python line\nafter the import\n"
    assert proc.stdout.splitlines() == ["SourceFileLoader SourceFileLoader", "finder gone True"]


def test_quiet_import_that_fails_still_shows_what_it_wrote_and_the_error(tmp_path):
    proc = _import_noisy(tmp_path, NOISY_FAIL="1")
    assert proc.returncode == 1
    assert "NOTICE" not in proc.stderr
    assert proc.stderr.startswith("kept: a C-level line\nkept: a Python line\n")
    assert proc.stderr.rstrip().endswith("RuntimeError: import failed")


def test_binaries_import_tensorflow_without_its_load_notices():
    """On CPUs where oneDNN is on by default, TensorFlow's import logs lines that
    TF_CPP_MIN_LOG_LEVEL=3 does not silence; a binary's stderr must not carry them."""
    code = ("from bgan_tf import errors; "
            "errors.cli_run(lambda argv: __import__('tensorflow') and print('imported'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported"
    assert proc.stderr == ""


def test_library_chatter_is_dropped_unless_verbose(monkeypatch):
    """Issue 28, item 6: FAISS's loader lines and TensorFlow's per-save "Sharding callback
    duration" line (logged through absl) are dropped; verbose, or TF_CPP_MIN_LOG_LEVEL=0,
    brings them back. (The binaries' output itself: tests/training/test_train_cli.py.)"""
    import logging

    from absl import logging as absl_logging

    from bgan_tf.runtime import quiet_library_logs

    absl_logger, faiss_loader = absl_logging.get_absl_logger(), logging.getLogger("faiss.loader")

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("absl", logging.INFO, __file__, 1, msg, (182,), None)

    chatter, other = record("Sharding callback duration: %s microseconds"), record("training data: %s images")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        quiet_library_logs()
        assert not absl_logger.filter(chatter) and absl_logger.filter(other)
        assert faiss_loader.level == logging.WARNING
        quiet_library_logs(verbose=True)
        assert absl_logger.filter(chatter) and faiss_loader.level == logging.NOTSET
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # asks TensorFlow for every log line
        quiet_library_logs()
        assert absl_logger.filter(chatter) and faiss_loader.level == logging.WARNING
    finally:
        quiet_library_logs(verbose=True)  # the state before: no filter, FAISS's logger unset
