"""bgan_tf.atomic: the guard, the swap and the lock every writer goes through."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bgan_tf import atomic
from bgan_tf.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def _is_ours(p: Path) -> bool:
    return (p / "MARK").is_file()


def _write(tmp: Path, text: str) -> None:
    (tmp / "MARK").write_text(text)


def test_new_and_own_folders_are_written_and_replaced(tmp_path):
    target = tmp_path / "out"
    with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
        _write(tmp, "one")
    assert (target / "MARK").read_text() == "one"
    with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
        _write(tmp, "two")
    assert (target / "MARK").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_empty_folder_is_accepted(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
        _write(tmp, "x")
    assert (target / "MARK").is_file()


def test_foreign_folder_and_file_are_refused_untouched(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"precious")
    with pytest.raises(UserError, match="not a thing"):
        with atomic.staged_dir(folder, what="thing", is_ours=_is_ours) as tmp:
            _write(tmp, "x")
    assert (folder / "keep.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in folder.iterdir()) == ["keep.jpg"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UserError, match="is a file"):
        with atomic.staged_dir(a_file, what="thing", is_ours=_is_ours) as tmp:
            _write(tmp, "x")
    assert a_file.read_text() == "mine"
    assert not list(tmp_path.glob(".*tmp-*"))


def test_failure_leaves_previous_version(tmp_path):
    target = tmp_path / "out"
    with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
        _write(tmp, "good")
    with pytest.raises(RuntimeError):
        with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
            _write(tmp, "half")
            raise RuntimeError("crash while writing")
    assert (target / "MARK").read_text() == "good"
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_leftover_temp_folders_are_cleaned_by_the_next_writer(tmp_path):
    target = tmp_path / "out"
    stale = tmp_path / ".out.tmp-killed"
    stale.mkdir()
    (stale / "half").write_text("x")
    other = tmp_path / ".other.tmp-keep"  # another target's: not ours to clean
    other.mkdir()
    with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
        _write(tmp, "x")
    assert not stale.exists()
    assert other.exists()


def test_interrupted_fallback_swap_is_recovered(tmp_path):
    target = tmp_path / "out"
    old = tmp_path / ".out.old-123"
    old.mkdir()
    _write(old, "previous")
    atomic.recover_dir(target, _is_ours)
    assert (target / "MARK").read_text() == "previous"


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "out"
        with atomic.staged_dir(target, what="thing", is_ours=_is_ours) as tmp:
            _write(tmp, "x")
        atomic.write_json(tmp_path / "eval.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "eval.json").stat().st_mode) == 0o644


def test_overlapping_input_and_output_are_refused(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for out, inp in [("imgs", "imgs"), ("imgs/sub", "imgs"), ("imgs", "imgs/sub")]:
        with pytest.raises(UserError, match="overlaps"):
            atomic.check_disjoint(tmp_path / out, tmp_path / inp)
    atomic.check_disjoint(tmp_path / "index", tmp_path / "imgs")


def test_second_writer_gets_a_clear_error(tmp_path):
    target = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys
        from bgan_tf import atomic
        from bgan_tf.errors import UserError
        try:
            with atomic.output_lock({str(target)!r}, "index"):
                pass
        except UserError as e:
            print(e)
            sys.exit(3)
    """)
    with atomic.output_lock(target, "index"):
        with atomic.output_lock(target, "index"):  # re-entrant in one process
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr
    assert "another process is writing the index" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_writing_streams_a_file_in_whole_or_not_at_all(tmp_path):
    path = tmp_path / "feats.npy"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with atomic.writing(path) as f:
            f.write(b"half")
            raise RuntimeError("killed half way")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.npy"]  # no temp file left
    with atomic.writing(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == atomic.umask_mode(0o666)


def test_a_symlinked_output_writes_its_target_and_keeps_the_link(tmp_path):
    """Issue 27 case 13, for every output kind (index, report, model, export): staged_dir
    through a link to an own folder or an empty one writes the target and keeps the link."""
    for name, prepare in (("own", lambda p: atomic.write_text(p / "MARK", "old")), ("empty", lambda p: None)):
        real, link = tmp_path / f"real_{name}", tmp_path / f"link_{name}"
        real.mkdir()
        prepare(real)
        link.symlink_to(real)
        with atomic.staged_dir(link, what="thing", is_ours=_is_ours) as tmp:
            _write(tmp, "new")
        assert link.is_symlink() and (real / "MARK").read_text() == "new", name
    assert not [p for p in tmp_path.iterdir() if atomic.TMP_INFIX in p.name or atomic.OLD_INFIX in p.name]
