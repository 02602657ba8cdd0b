"""Issue 11, export side: bad input and faults give one line and leave no half-written export.

- load_encoder: every broken model folder (truncated or foreign weights, bad JSON, a
  config that does not match the weights, unknown backbone, not a model folder) is a
  UserError naming the folder, the file and what to do.
- The export base and the TFLite folder are checked before anything is written; a
  version appears only after its checks passed; a TFLite set replaces the old one
  whole or not at all; killed runs' temps are cleaned by the next export.
- The export binaries: numeric flags bounded at parse time, --helpshort, unknown flags,
  one ``error:`` line and exit 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags

import export.all as export_all
import export.saved_model as export_saved_model
import export.tflite as export_tflite
from bgan_tf.inference.tflite import TFLiteEncoder
from bgan_tf.serving import checks as checks_lib
from bgan_tf.serving import saved_model as sm_lib
from bgan_tf.serving import tflite as tflite_lib
from bgan_tf.errors import UserError
from bgan_tf.inference.keras_model import load_encoder, load_generator
from flags.export_flags import define_export_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _copy_model(src: str, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (and every entry beside it) with its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


# --------------------------------------------------------------------------
# item 11: model loading
# --------------------------------------------------------------------------

def _truncate(m: Path) -> None:
    data = (m / "encoder.weights.h5").read_bytes()
    (m / "encoder.weights.h5").write_bytes(data[:5000])


def _garbage_weights(m: Path) -> None:
    (m / "encoder.weights.h5").write_bytes(np.random.default_rng(0).bytes(200_000))


def _foreign_weights(m: Path) -> None:
    shutil.copy(m / "generator.weights.h5", m / "encoder.weights.h5")


def _bits_differ_from_weights(m: Path) -> None:
    # config and metadata agree with each other, not with the weights file.
    _edit_json(m / "config.json", num_bits=32)
    _edit_json(m / "metadata.json", num_bits=32)


CORRUPTIONS = {
    "truncated weights": (_truncate, "encoder.weights.h5 is truncated or not a Keras weights file"),
    "random bytes as weights": (_garbage_weights, "encoder.weights.h5 is truncated or not a Keras weights file"),
    "weights of another network": (_foreign_weights, "encoder.weights.h5 does not match the architecture in "
                                                     "config.json (backbone small_cnn, 16 bits)"),
    "num_bits does not match the weights": (_bits_differ_from_weights,
                                            "encoder.weights.h5 does not match the architecture in config.json "
                                            "(backbone small_cnn, 32 bits)"),
    "config and metadata disagree": (lambda m: _edit_json(m / "config.json", num_bits=32),
                                     "config.json says num_bits 32 but metadata.json says 16"),
    "config not JSON": (lambda m: (m / "config.json").write_text('{"num_bits": '),
                        "config.json is not valid JSON"),
    "config a JSON list": (lambda m: (m / "config.json").write_text("[1, 2]"),
                           "config.json holds a JSON list, not an object"),
    "config with a bad value": (lambda m: _edit_json(m / "config.json", num_bits="sixteen"),
                                "config.json has invalid values: num_bits 'sixteen'"),
    "unknown backbone": (lambda m: _edit_json(m / "config.json", backbone="no_such_net"),
                         "config.json names a backbone that cannot be built (unknown backbone 'no_such_net'"),
    "metadata missing": (lambda m: (m / "metadata.json").unlink(),
                         "is not a trained bgan_tf model (missing metadata.json)"),
    "metadata not JSON": (lambda m: (m / "metadata.json").write_bytes(b"\xff\xfenot json"),
                          "metadata.json is not valid JSON"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_load_encoder_names_the_broken_file(tiny_model_dir, tmp_path, name):
    corrupt, expected = CORRUPTIONS[name]
    model = _copy_model(tiny_model_dir, tmp_path)
    corrupt(model)
    with pytest.raises(UserError) as info:
        load_encoder(str(model))
    msg = str(info.value)
    assert expected in msg
    assert str(model) in msg and "\n" not in msg
    assert "retrain the model" in msg and "pass another model folder" in msg


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"is not a trained bgan_tf model \(no config.json, metadata.json, "
                                         r"encoder.weights.h5\); pass the 'model' folder that training wrote"):
        load_encoder(str(tmp_path))
    with pytest.raises(UserError, match="notes.txt is a file, not a model folder"):
        load_encoder(str(tmp_path / "notes.txt"))


def test_truncated_generator_is_named(tiny_model_dir, tmp_path):
    model = _copy_model(tiny_model_dir, tmp_path)
    (model / "generator.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(UserError, match=f"cannot load the model in {model}: generator.weights.h5 is truncated"):
        load_generator(str(model))


def test_tflite_file_that_is_not_our_encoder(tmp_path):
    import tensorflow as tf

    # A valid TFLite model whose signature has "images" but no "codes"/"packed".
    class Other(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.float32, name="images")])
        def serve(self, images):
            return {"doubled": images * 2.0}

    m = Other()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m)
    path = tmp_path / "other.tflite"
    path.write_bytes(conv.convert())
    with pytest.raises(UserError, match=r"other.tflite is not an encoder exported by python -m export.tflite "
                                        r"\(its signature has no codes, packed tensor\); export it again"):
        TFLiteEncoder(str(path))


# --------------------------------------------------------------------------
# item 4 / 13: the export base
# --------------------------------------------------------------------------

def test_export_base_refusals_touch_nothing(loaded, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    with pytest.raises(UserError, match="a_file is a file, not a folder"):
        sm_lib.export_saved_model(loaded, a_file)
    assert a_file.read_text() == "keep me"

    strangers = tmp_path / "strangers"
    (strangers / "1").mkdir(parents=True)
    (strangers / "notes.txt").write_text("mine")
    (strangers / ".tmp-not-ours").mkdir()
    before = _snapshot(strangers)
    with pytest.raises(UserError, match=r"holds entries that are not SavedModel versions \(.tmp-not-ours, "
                                        r"notes.txt\); TF Serving loads every integer subfolder"):
        sm_lib.export_saved_model(loaded, strangers)
    assert _snapshot(strangers) == before

    with pytest.raises(UserError, match="overlaps the input"):
        sm_lib.export_saved_model(loaded, Path(loaded.model_dir) / "exports")
    assert not (Path(loaded.model_dir) / "exports").exists()

    versions = tmp_path / "versions"
    (versions / "4").mkdir(parents=True)
    with pytest.raises(UserError, match="version 4 already exists"):
        sm_lib.export_saved_model(loaded, versions, version=4)
    for bad in (-1, True, 2**63):
        with pytest.raises(UserError, match="--version must be an integer from 0"):
            sm_lib.export_saved_model(loaded, versions, version=bad)
    assert os.listdir(versions) == ["4"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only folders")
def test_read_only_outputs_are_refused(loaded, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="permission denied"):
            sm_lib.export_saved_model(loaded, ro / "base")
        with pytest.raises(UserError, match="permission denied"):
            tflite_lib.convert_tflite(loaded, ro / "tfl", ["float"])
    finally:
        ro.chmod(0o755)
    assert os.listdir(ro) == []


def test_failed_check_leaves_no_version_and_stale_temps_are_cleaned(loaded, tmp_path):
    base = tmp_path / "base"
    (base / "3").mkdir(parents=True)
    (base / ".bgan_export.tmp-killed1").mkdir()  # a killed run of this exporter
    (base / ".tmp-2-abcd_123").mkdir()  # a killed run of the exporter before it used atomic
    seen = []

    def failing_check(path: str) -> None:
        seen.append(path)
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        assert not (base / "4").exists()  # checked while still hidden
        raise UserError("codes differ")

    with pytest.raises(UserError, match="codes differ"):
        sm_lib.export_saved_model(loaded, base, check=failing_check)
    assert os.path.basename(seen[0]).startswith(".bgan_export.tmp-")
    assert os.listdir(base) == ["3"]  # no version 4, no temp, the killed runs' temps gone

    # A new base that a failed export created is removed again.
    fresh = tmp_path / "fresh"
    with pytest.raises(UserError, match="codes differ"):
        sm_lib.export_saved_model(loaded, fresh, check=failing_check)
    assert not fresh.exists()

    # Passing checks: the version appears, under the umask's modes.
    old = os.umask(0o002)
    try:
        path = sm_lib.export_saved_model(loaded, base, check=lambda p: None)
    finally:
        os.umask(old)
    assert path == str(base / "4") and sorted(os.listdir(base)) == ["3", "4"]
    assert os.stat(path).st_mode & 0o777 == 0o775
    assert os.stat(os.path.join(path, "bgan_metadata.json")).st_mode & 0o777 == 0o664


# --------------------------------------------------------------------------
# item 4: the TFLite folder is one set
# --------------------------------------------------------------------------

def _old_set(out: Path) -> None:
    """A complete TFLite export of another model."""
    out.mkdir()
    (out / "encoder_float.tflite").write_bytes(b"old float")
    (out / "encoder_int8.tflite").write_bytes(b"old int8")
    (out / tflite_lib.TFLITE_METADATA_NAME).write_text(json.dumps(
        {"format": tflite_lib.TFLITE_FORMAT, "model_id": "old-model", "variants": {"float": {}, "int8": {}}}))


def test_tflite_set_is_replaced_whole_or_not_at_all(loaded, tmp_path, monkeypatch):
    out = tmp_path / "tfl"
    _old_set(out)
    before = _snapshot(out)

    def failing_check(paths: dict[str, str]) -> None:
        assert set(paths) == {"float"} and all(".tfl.tmp-" in p for p in paths.values())
        raise UserError("float disagrees")

    with pytest.raises(UserError, match="float disagrees"):
        tflite_lib.convert_tflite(loaded, out, ["float"], check=failing_check)
    assert _snapshot(out) == before

    # Killed half way (Ctrl-C during the second variant): the old set stays, whole.
    real = tflite_lib.tflite_converter

    def interrupt_second(sm_dir, variant, representative=None):
        if variant == "dynamic_int8":
            raise KeyboardInterrupt
        return real(sm_dir, variant, representative)

    monkeypatch.setattr(tflite_lib, "tflite_converter", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        tflite_lib.convert_tflite(loaded, out, ["float", "dynamic_int8"])
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tfl.lock", "tfl"]

    # A run killed outright leaves its temp beside the folder; the next export removes it
    # and replaces the old set by the new one (the old int8 file does not survive).
    (tmp_path / ".tfl.tmp-killed").mkdir()
    old = os.umask(0o002)
    try:
        paths = tflite_lib.convert_tflite(loaded, out, ["float"])
    finally:
        os.umask(old)
    assert sorted(os.listdir(out)) == [tflite_lib.TFLITE_METADATA_NAME, "encoder_float.tflite"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tfl.lock", "tfl"]
    meta = json.loads((out / tflite_lib.TFLITE_METADATA_NAME).read_text())
    assert meta["format"] == tflite_lib.TFLITE_FORMAT and meta["model_id"] == loaded.model_id
    assert list(meta["variants"]) == ["float"]
    enc = TFLiteEncoder(paths["float"])
    assert meta["variants"]["float"]["model_id"] == enc.model_id
    assert os.stat(out).st_mode & 0o777 == 0o775
    assert os.stat(paths["float"]).st_mode & 0o777 == 0o664


def test_tflite_out_refusals_touch_nothing(loaded, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    with pytest.raises(UserError, match="a_file is a file, not a folder"):
        tflite_lib.check_tflite_out(a_file)

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(UserError, match="already holds files that are not a TFLite export"):
        tflite_lib.convert_tflite(loaded, photos, ["float"])
    assert os.listdir(photos) == ["cat.jpg"]

    # Our own export, but someone added a file to it: replacing the set would delete it.
    ours = tmp_path / "ours"
    _old_set(ours)
    (ours / "README.md").write_text("notes")
    with pytest.raises(UserError, match="already holds files that are not a TFLite export"):
        tflite_lib.check_tflite_out(ours)

    # Written by the exporter before it left a marker (two models' files after a kill, and
    # a per-file temp): ours, so the next export may replace the whole set.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("encoder_float.tflite", "encoder_int8.tflite", ".encoder_int8.tflite.tmp-ab12_x9z"):
        (legacy / name).write_bytes(b"old")
    assert tflite_lib.check_tflite_out(legacy) == legacy

    for inside in (Path(loaded.model_dir), Path(loaded.model_dir) / "tfl", Path(loaded.model_dir).parent):
        with pytest.raises(UserError):
            tflite_lib.convert_tflite(loaded, inside, ["float"])
    assert not (Path(loaded.model_dir) / "tfl").exists()
    assert sorted(os.listdir(tmp_path)) == ["a_file", "legacy", "ours", "photos"]


# --------------------------------------------------------------------------
# the export binaries
# --------------------------------------------------------------------------

def _run_in_process(binary, *args: str) -> None:
    """``python -m <binary> ARGS`` in this process (flags defined as its run() does, parsed, then reset)."""
    define_export_flags()
    argv = [binary.__name__, *args]
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        binary.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()


def test_numeric_and_variant_flags_are_checked_at_parse_time(tmp_path):
    for arg in ("--check_count=0", "--check_count=100000", "--representative_count=0", "--version=-1",
                "--variants=float,bogus", "--variants="):
        with pytest.raises(flags.Error):
            _run_in_process(export_all, "--model=m", f"--export_base={tmp_path / 'b'}", arg)
    assert os.listdir(tmp_path) == []


def test_bad_check_images_are_refused_before_a_version_is_written(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    with pytest.raises(UserError, match="--check_images '/nope' not found"):
        _run_in_process(export_saved_model, f"--model={tiny_model_dir}", f"--export_base={base}",
                        "--check_images=/nope")
    with pytest.raises(UserError, match="overlaps the input"):
        _run_in_process(export_tflite, f"--model={tiny_model_dir}", f"--out={tiny_model_dir}/tfl")
    assert os.listdir(tmp_path) == []


def test_export_all_writes_no_version_when_the_tflite_check_fails(tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    real = checks_lib.check_tflite

    def broken_float(paths, model, images):
        checks = real(paths, model, images)
        checks["float"].bit_agreement = 0.53
        return checks

    monkeypatch.setattr(checks_lib, "check_tflite", broken_float)
    base, out = tmp_path / "base", tmp_path / "tfl"
    with pytest.raises(UserError, match=r"float TFLite model disagrees with Keras \(bit agreement 0.5300\); "
                                        r"nothing was written"):
        _run_in_process(export_all, f"--model={tiny_model_dir}", f"--export_base={base}", f"--out={out}",
                        "--variants=float", "--check_count=16")
    # Neither the SavedModel version nor the TFLite set: only the lock files remain.
    assert sorted(os.listdir(tmp_path)) == [".base.lock", ".tfl.lock"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_cli_one_error_line_and_exit_2(tiny_model_dir, tmp_path):
    model = _copy_model(tiny_model_dir, tmp_path)
    _truncate(model)
    base = tmp_path / "base"
    proc = _cli("export.all", f"--model={model}", f"--export_base={base}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: cannot load the model in {model}: encoder.weights.h5 is truncated "
                                "or not a Keras weights file (")
    assert errors[0].endswith("; retrain the model (python -m bgan_tf.train) or pass another model folder")
    assert not base.exists() and not (tmp_path / "base_tflite").exists()

    proc = _cli("export.all", "--no_such_flag=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: Unknown command line flag 'no_such_flag' (see --helpshort)"]


def test_helpshort_lists_the_export_flags():
    proc = _cli("export.all", "--helpshort")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr  # help is no failure (absl exits 1)
    for flag in ("--export_base", "--out", "--variants", "--check_count", "--version"):
        assert flag in proc.stdout, flag


# --------------------------------------------------------------------------
# issue 27 case 18: a damaged .tflite file
# --------------------------------------------------------------------------

# Loads each fuzzed file and encodes two images, one line per file: "ok", "user <msg>", or
# "other <type> <msg>". Run in a subprocess: a corruption that crashes the TFLite C++
# runtime must fail this test, not kill pytest. No TensorFlow is imported (ai-edge-litert
# only), so a whole sweep takes seconds. Under an address-space cap (RLIMIT_AS, fine here
# because the process does not import TensorFlow): loading and running the tiny model
# peaks at 173 MB of virtual memory, so 1 GB leaves room while a file read whole or a
# runtime that allocates what a damaged header claims fails fast with MemoryError.
_FUZZ_RUNNER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import numpy as np
from bgan_tf.errors import UserError
from bgan_tf.inference.tflite import TFLiteEncoder
for path in sys.argv[1:]:
    try:
        codes = TFLiteEncoder(path).encode(np.zeros((2, 40, 30, 3), np.uint8))
        assert codes.shape == (2, 16) and set(np.unique(codes)) <= {-1.0, 1.0}, codes
        print("ok", flush=True)
    except UserError as e:
        print("user", str(e).replace(chr(10), "|"), flush=True)
    except BaseException as e:
        print("other", type(e).__name__, str(e).splitlines()[:1], flush=True)
"""


@pytest.fixture(scope="module")
def float_tflite(loaded, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tfl_fuzz") / "tfl"
    return Path(tflite_lib.convert_tflite(loaded, out, ["float"])["float"])


def _fuzz_outcomes(paths: list[Path]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _FUZZ_RUNNER, *map(str, paths)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, f"the TFLite runtime crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == len(paths), proc.stdout
    return lines


def _flipped(data: bytes, count: int = 150, seed: int = 1) -> list[bytes]:
    """``count`` copies of ``data`` with one seeded byte set: alternately in the flatbuffer's
    first 3 KB and its last 6 KB (tables, tensor indices), where the weights are not."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        b = bytearray(data)
        off = int(rng.integers(0, 3000)) if i % 2 else len(b) - 1 - int(rng.integers(0, 6000))
        b[off] = int(rng.integers(0, 256))
        out.append(bytes(b))
    return out


def test_fuzzed_tflite_is_a_user_error_or_a_correct_run(float_tflite, tmp_path):
    """Issue 27 case 18: a byte-fuzzed .tflite gave a ``RuntimeError: Invalid tensor index``
    traceback. Files copied out of their export folder (no recorded checksum) go through
    the identifier check and the runtime, whose every error must become a UserError.

    The seeded offsets hit the flatbuffer's tables (its first and last kilobytes, where
    the runtime read out-of-range tensor indices before the fix) and the weights; seed 1's
    sweep gave 5 RuntimeErrors in 150 files before the fix.
    """
    data = float_tflite.read_bytes()
    paths = []
    for i, fuzzed in enumerate(_flipped(data)):
        paths.append(tmp_path / f"flip{i}.tflite")
        paths[-1].write_bytes(fuzzed)
    for i, cut in enumerate((0, 7, 100, len(data) // 2, len(data) - 1)):
        paths.append(tmp_path / f"cut{i}.tflite")
        paths[-1].write_bytes(data[:cut])
    outcomes = _fuzz_outcomes(paths)
    others = [f"{p.name}: {o}" for p, o in zip(paths, outcomes) if not o.startswith(("ok", "user"))]
    assert not others, others
    users = [o for o in outcomes if o.startswith("user")]
    assert all("export it again" in o and str(tmp_path) in o for o in users), users
    assert sum(o.startswith("user") for o in outcomes[-5:]) == 5  # every truncation is refused
    assert "is not an encoder exported by python -m export.tflite (no TFLite TFL3 identifier" in outcomes[-5]


def test_tflite_checksum_refuses_flipped_weights(float_tflite, tmp_path):
    """Issue 27 case 18: inside its export folder a file is checked against the sha256
    ``bgan_tflite.json`` recorded, so a flipped weight byte, which the runtime would run
    and answer with silently wrong codes, is refused before the interpreter parses it."""
    folder = tmp_path / "tfl"
    shutil.copytree(float_tflite.parent, folder)
    path = folder / float_tflite.name
    assert TFLiteEncoder(str(path)).num_bits == 16
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    outcome, = _fuzz_outcomes([path])
    assert outcome == (f"user {path} is damaged: its sha256 differs from the one recorded in bgan_tflite.json "
                       "when it was exported; export it again (python -m export.tflite)")


def test_index_binary_prints_one_line_for_a_damaged_tflite(float_tflite, tmp_path):
    """Issue 27 case 18: the binaries that take a .tflite (index build/query, serve) print one
    ``error:`` line for a damaged file, not a traceback. Flip 28 of the sweep above is one
    that gave ``RuntimeError: Invalid tensor index`` before the fix."""
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(_flipped(float_tflite.read_bytes(), count=29)[28])
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(images / "a.png")
    proc = _cli("bgan_tf.index", "build", f"--model={bad}", f"--images={images}", f"--index={tmp_path / 'idx'}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: {bad} is not an encoder exported by python -m export.tflite or is "
                                "damaged (the TFLite runtime says: Invalid tensor index "), errors[0]
    assert errors[0].endswith("export it again (python -m export.tflite)")


# --------------------------------------------------------------------------
# issue 27 case 5: encode_bytes's pixel limit
# --------------------------------------------------------------------------

# The export the child process loads refuses more than this many pixels; 30x30 fits,
# 40x40 does not.
_TEST_MAX_PIXELS = 1000
# Address-space cap of the child (RLIMIT_AS; RLIMIT_DATA would do too): measured, TF
# start-up + loading the tiny SavedModel + one small request peak at 1.85 GB of virtual
# memory, while decoding the 20000x20000 bomb needs 1.2 GB more for its uint8 pixels (and
# the code before the fix 4.8 GB more for a float32 copy). Under the cap the regression
# fails with OOM in seconds instead of taking 6 GB of the machine.
_ENCODE_BYTES_AS_CAP = 2560 << 20
_ENCODE_BYTES_RUNNER = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
import tensorflow as tf
sig = tf.saved_model.load(sys.argv[2]).signatures["encode_bytes"]
# One small image first: the first call instantiates the graph (about 1-2 s on a busy
# 2-core machine since encode_bytes gained the decoder contract's JPEG/PNG branches,
# issue 29), which is not the decode time the limit is about.
sig(image_bytes=tf.constant([tf.io.encode_png(tf.zeros((4, 4, 3), tf.uint8)).numpy()]))
for path in sys.argv[3:]:
    start = time.monotonic()
    try:
        out = sig(image_bytes=tf.constant([open(path, "rb").read()]))
        print(path, "ok", out["hex"].numpy()[0].decode(), flush=True)
    except tf.errors.InvalidArgumentError as e:
        msg = [line for line in str(e).splitlines() if "assertion failed" in line or "Invalid" in line]
        print(path, "refused", round(time.monotonic() - start, 3), msg[:1], flush=True)
    except Exception as e:
        print(path, "other", type(e).__name__, str(e).splitlines()[:1], flush=True)
"""


def _with_header_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A small real file of ``fmt`` whose header is rewritten to claim width x height."""
    import struct
    import zlib

    b = bytearray(data)
    if fmt == "PNG":  # IHDR, big-endian uint32, and its CRC
        b[16:24] = struct.pack(">II", width, height)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    elif fmt == "GIF":  # the first frame's image descriptor (TF decodes the frame size, not the screen)
        pos = 13 + (3 << ((b[10] & 7) + 1) if b[10] & 0x80 else 0)
        while b[pos] == 0x21:  # extensions before the frame: skip their sub-blocks
            pos += 2
            while b[pos]:
                pos += b[pos] + 1
            pos += 1
        assert b[pos] == 0x2C
        b[pos + 5:pos + 9] = struct.pack("<HH", width, height)
    elif fmt == "BMP":  # BITMAPINFOHEADER, little-endian int32
        b[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":  # the SOF0 frame header: FF C0, length, precision, height, width
        sof = b.index(b"\xff\xc0")
        b[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(b)


def test_encode_bytes_refuses_images_over_its_pixel_limit_before_decoding(loaded, tmp_path):
    """Issue 27 case 5: the SavedModel's encode_bytes decoded any image with no pixel limit
    (a 20000x20000 PNG of 5 MB took 1.2 GB + a 4.8 GB float32 copy and died with OOM after
    13 s). Now each file's header is read first and an image over the export's max_pixels
    is an InvalidArgument naming the limit, in milliseconds, for PNG, JPEG, GIF (every frame
    counted, whatever its screen claims) and BMP; an image within the limit still encodes.
    Runs under an address-space cap."""
    import io

    from PIL import Image
    from testlib import png_header_only, zero_png_idat

    base = tmp_path / "base"
    path = sm_lib.export_saved_model(loaded, base, max_pixels=_TEST_MAX_PIXELS)
    assert sm_lib.read_export_metadata(path)["signatures"]["encode_bytes"]["max_pixels"] == _TEST_MAX_PIXELS

    rng = np.random.default_rng(0)
    files = {"bomb.png": png_header_only(20000, 20000, zero_png_idat(20000, 20000))}
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        for side in (30, 40):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format=fmt)
            files[f"{side}.{fmt.lower()}"] = buf.getvalue()
        files[f"claims_huge.{fmt.lower()}"] = _with_header_size(files[f"30.{fmt.lower()}"], fmt, 20000, 20000)
    # GIF: TensorFlow holds every frame and returns the largest, whatever the logical screen
    # says. Two 30x30 frames are 1800 pixels; a 40x40 frame on a 1x1 screen is 1600.
    frames = [Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)) for _ in range(2)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    files["two_frames.gif"] = buf.getvalue()
    files["small_screen.gif"] = files["40.gif"][:6] + b"\x01\x00\x01\x00" + files["40.gif"][10:]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", _ENCODE_BYTES_RUNNER, str(_ENCODE_BYTES_AS_CAP), path,
                           *(str(tmp_path / n) for n in files)],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = {os.path.basename(line.split()[0]): line.split(None, 1)[1] for line in proc.stdout.splitlines()}
    assert set(outcomes) == set(files), proc.stdout
    for name, outcome in outcomes.items():
        if name.startswith("30."):
            assert outcome.startswith("ok "), (name, outcome)
            continue
        assert outcome.startswith("refused "), (name, outcome)
        seconds = float(outcome.split()[1])
        assert seconds < 2.0, (name, outcome)  # from the header: nothing was decoded
        pixels = {"40": 1600, "two_frames": 1800, "small_screen": 1600}.get(name.split(".")[0], 20000 * 20000)
        assert (f"claims] [{pixels}] [pixels (width x height, every frame of a GIF), over the limit of] "
                f"[{_TEST_MAX_PIXELS}] [set at export (--max_pixels); downscale it before sending]") in outcome, \
            (name, outcome)


def test_max_pixels_flag_default_bounds_and_library_check(tmp_path):
    """Issue 27 case 5: the limit is an export flag, bounded at parse time, by default the
    search service's budget (a TF Serving deployment is a server many clients share)."""
    from bgan_tf.search.limits import DEFAULT_MAX_PIXELS as SERVICE_MAX_PIXELS
    from flags.export_flags import export_max_pixels

    define_export_flags()
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["export.all", "--model=m", "--export_base=b"])
        assert export_max_pixels() == SERVICE_MAX_PIXELS
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["export.all", "--model=m", "--export_base=b", "--max_pixels=1234"])
        assert export_max_pixels() == 1234
    finally:
        flags.FLAGS.unparse_flags()
    for arg in ("--max_pixels=0", f"--max_pixels={2**31}"):
        with pytest.raises(flags.Error):
            _run_in_process(export_all, "--model=m", f"--export_base={tmp_path / 'b'}", arg)
    for bad in (0, 2**31, True, 1.5):
        with pytest.raises(UserError, match="--max_pixels must be an integer from 1 to 2,147,483,647"):
            sm_lib.check_max_pixels(bad)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# issue 27 case 11 (export part): disk full
# --------------------------------------------------------------------------

def _disk_full_errors():
    import errno

    import tensorflow as tf

    # What TF's SaveV2 raises on a full disk, and what Python's writes raise.
    return {"SaveV2": tf.errors.ResourceExhaustedError(None, None, "tmp/variables.data-00000-of-00001.tempstate; "
                                                                   "No space left on device [Op:SaveV2]"),
            "ENOSPC": OSError(errno.ENOSPC, "No space left on device", "bgan_metadata.json")}


@pytest.mark.parametrize("kind", ["SaveV2", "ENOSPC"])
def test_disk_full_during_saved_model_export_is_one_line_and_leaves_nothing(loaded, tmp_path, monkeypatch, kind):
    """Issue 27 case 11: a full disk while export.all wrote the SavedModel ended in a 50-line
    ``ResourceExhaustedError [Op:SaveV2]`` traceback. Now it is one UserError line, and the
    half-written version folder is removed (no version, no temp, the new base removed)."""
    error = _disk_full_errors()[kind]

    class HalfWritten:
        def write_out(self, folder: str, verbose: bool = False) -> None:
            Path(folder, "saved_model.pb").write_bytes(b"half")
            raise error

    monkeypatch.setattr(sm_lib, "build_archive", lambda *a, **k: HalfWritten())
    base = tmp_path / "base"
    with pytest.raises(UserError) as info:
        sm_lib.export_saved_model(loaded, base)
    assert str(info.value).startswith(f"no space left on device while writing {base}")
    assert str(info.value).endswith("free space or choose another --export_base (no version was written)")
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == [".base.lock"]  # no base, no version, no temp


def test_disk_full_in_export_binary_and_tflite_leaves_the_old_set(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 27 case 11: the same for the TFLite set (the previous set stays whole) and
    through the export.all binary."""
    from bgan_tf import atomic

    real = atomic.write_bytes

    def full_disk(path, data, *a, **k):
        real(path, data[:10], *a, **k)
        raise _disk_full_errors()["ENOSPC"]

    out = tmp_path / "tfl"
    _old_set(out)
    before = _snapshot(out)
    monkeypatch.setattr(atomic, "write_bytes", full_disk)
    with pytest.raises(UserError, match=f"^no space left on device while writing {out}; free space or choose "
                                        r"another --out \(the folder was left as it was\)$"):
        _run_in_process(export_tflite, f"--model={tiny_model_dir}", f"--out={out}", "--variants=float",
                        "--nocheck")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tfl.lock", "tfl"]


# --------------------------------------------------------------------------
# issue 27 case 21 (export items): version overflow, start-up noise on stderr
# --------------------------------------------------------------------------

def test_automatic_version_never_passes_int64(loaded, tmp_path):
    """Issue 27 case 21: after version 2^63-1 the automatic next version was 2^63, which
    overflows TF Serving's int64 version. Now the base is refused before any work, with
    one line; an explicit free --version still works."""
    base = tmp_path / "base"
    (base / str(sm_lib.MAX_VERSION)).mkdir(parents=True)
    msg = (f"already holds version {sm_lib.MAX_VERSION}, the largest TF Serving accepts ({sm_lib.MAX_VERSION}); "
           "pass a free --version below it or export to a new base")
    with pytest.raises(UserError, match=re.escape(msg)):
        sm_lib.check_export_base(base)
    with pytest.raises(UserError, match=re.escape(msg)):
        sm_lib.export_saved_model(loaded, base, check=lambda p: None)
    assert os.listdir(base) == [str(sm_lib.MAX_VERSION)]
    with pytest.raises(UserError, match=re.escape(msg)):
        _run_in_process(export_saved_model, "--model=/no/such/model", f"--export_base={base}")


def test_successful_export_all_writes_nothing_on_stderr(tiny_model_dir, tmp_path):
    """Issue 27 case 21: a successful export printed TensorFlow/TFLite start-up notices on
    stderr whatever TF_CPP_MIN_LOG_LEVEL said: the TFLite runtime's "INFO: Created TensorFlow
    Lite XNNPACK delegate for CPU.", and with int8 the calibrator's "fully_quantize: ..." and
    its tf.lite.Interpreter deprecation warning (TF's cpu_feature_guard lines are INFO, and
    hidden by the level). With the binaries' default level (3) stderr is now empty. The same
    run pins case 5's flag end to end: --max_pixels reaches the SavedModel's metadata."""
    base, out = tmp_path / "base", tmp_path / "tfl"
    proc = _cli("export.all", f"--model={tiny_model_dir}", f"--export_base={base}", f"--out={out}",
                "--variants=float,int8", "--representative_count=8", "--check_count=16", "--max_pixels=1234")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "SavedModel version written" in proc.stdout
    assert sm_lib.read_export_metadata(str(base / "1"))["signatures"]["encode_bytes"]["max_pixels"] == 1234


@pytest.mark.parametrize("level, shown", [("0", True), ("", True), ("1", False), ("3", False)])
def test_tflite_notices_follow_tf_cpp_min_log_level(monkeypatch, capfd, level, shown):
    """Issue 27 case 21: the notices are dropped only when TF_CPP_MIN_LOG_LEVEL hides INFO
    lines, so a user who asks for them (0, or unset) still gets them; other lines pass."""
    import warnings

    from bgan_tf.inference.tflite import TFLITE_NOTICES, quiet_tflite_notices

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_tflite_notices():
            os.write(2, (TFLITE_NOTICES[0] + "\nkeep me\n").encode())
            warnings.warn("    Warning: tf.lite.Interpreter is deprecated and is scheduled for deletion", UserWarning)
    err = capfd.readouterr().err
    assert "keep me" in err
    assert (TFLITE_NOTICES[0] in err) == shown
    assert len(caught) == (1 if shown else 0)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 512 KB tmpfs (the tiny model's SavedModel is 3.2 MB, its float .tflite 1.5 MB), or
    a skip where mounting is not allowed (not root, no CAP_SYS_ADMIN in a container)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_real_full_disk_is_one_line_for_both_exports(tiny_model_dir, tiny_tmpfs):
    """Issue 27 case 11 on a really full file system: TF's SaveV2 and the TFLite write fail
    with ENOSPC; each binary ends with one UserError line and leaves only its lock file."""
    with pytest.raises(UserError, match=f"^no space left on device while writing {tiny_tmpfs / 'base'} "
                                        r"\(ResourceExhaustedError\); free space or choose another --export_base"):
        _run_in_process(export_saved_model, f"--model={tiny_model_dir}", f"--export_base={tiny_tmpfs / 'base'}",
                        "--nocheck")
    with pytest.raises(UserError, match=f"^no space left on device while writing {tiny_tmpfs / 'tfl'}; free "
                                        "space or choose another --out"):
        _run_in_process(export_tflite, f"--model={tiny_model_dir}", f"--out={tiny_tmpfs / 'tfl'}",
                        "--variants=float", "--nocheck")
    assert sorted(os.listdir(tiny_tmpfs)) == [".base.lock", ".tfl.lock"]


def test_huge_tflite_is_refused_before_it_is_read(tmp_path):
    """Issue 27 case 18 (with case 19's "reads it all"): a 2 GB+ file named .tflite (sparse
    here, no disk used) was read whole into memory before anything looked at it; now its
    size is checked first. Under the runner's 1 GB address-space cap the read failed with
    MemoryError before the fix."""
    big = tmp_path / "huge.tflite"
    with open(big, "wb") as f:
        f.truncate(2**31 + 4096)
    outcome, = _fuzz_outcomes([big])
    assert outcome == (f"user {big} is not an encoder exported by python -m export.tflite (2,147,487,744 bytes, "
                       "more than a TFLite flatbuffer can address); export it again (python -m export.tflite)")


# Pillow warns about each broken block it reads; that is the Python path's reaction the
# test compares against, not a failure.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_malformed_exif_decodes_as_stored_in_both_decoders(loaded, tmp_path):
    """Issue 29 item 5: encode_bytes now reads a JPEG's EXIF orientation (to match the Python
    path), so EXIF is request data a client controls. A broken or hostile block (offsets
    past the segment, a 65535-entry count, an orientation outside 1-8, an Exif block after
    ICC and comment segments) must neither fail the request nor turn the image: both
    decoders keep it as stored, or both apply the same valid tag."""
    import io

    import tensorflow as tf
    from PIL import Image

    from bgan_tf.data.images import decode_image_bytes
    from bgan_tf.serving.tf_decode import decode_like_python

    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (19, 27, 3), dtype=np.uint8))

    def jpeg(exif: bytes, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90, exif=exif, **kw)
        return buf.getvalue()

    def ifd(entries: bytes, count: int, offset: int = 8) -> bytes:
        return b"Exif\0\0II*\0" + offset.to_bytes(4, "little") + count.to_bytes(2, "little") + entries

    def orientation(value: int, kind: int = 3) -> bytes:
        return b"\x12\x01" + kind.to_bytes(2, "little") + b"\1\0\0\0" + value.to_bytes(4, "little")

    files = {
        "ifd offset past the segment": jpeg(ifd(orientation(6), 1, offset=0xFFFFFFF0)),
        "count 65535, one entry": jpeg(ifd(orientation(6), 65535)),
        "orientation 9": jpeg(ifd(orientation(9), 1)),
        "orientation 0": jpeg(ifd(orientation(0), 1)),
        "entry cut short": jpeg(ifd(orientation(6)[:9], 1)),
        "no IFD": jpeg(b"Exif\0\0II*\0"),
        "not TIFF": jpeg(b"Exif\0\0garbage"),
        "after ICC and comment": jpeg(ifd(orientation(6), 1), icc_profile=b"\0" * 3000, comment=b"hi"),
    }
    decode = tf.function(decode_like_python)
    for name, data in files.items():
        want = decode_image_bytes(data, what=name)
        got = decode(tf.constant(data)).numpy()
        assert got.shape == want.shape and np.array_equal(got, want), name
    # The last one carries a valid tag after other segments: it is turned (27x19 -> 19x27 stored).
    assert want.shape == (27, 19, 3)
    base = tmp_path / "base"
    sm = tf.saved_model.load(sm_lib.export_saved_model(loaded, base))
    out = checks_lib.call_signature(sm.signatures["encode_bytes"], image_bytes=tf.constant(list(files.values())))
    np.testing.assert_array_equal(out["codes"], checks_lib.python_path_codes(sm.signatures["serving_default"],
                                                                              list(files.values())))
