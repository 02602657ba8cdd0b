"""bgan_tf.runtime: the allocator settings every binary applies, and their opt-out."""

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
