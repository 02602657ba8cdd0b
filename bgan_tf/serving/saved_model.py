"""TF Serving SavedModel export of a trained encoder: signatures, versions, metadata.

``export_saved_model`` / ``staged_saved_model`` write ``<base>/<version>/`` (the
layout TF Serving watches). The version is built and checked in a hidden
temporary folder inside ``<base>`` and renamed into place only when the checks
pass, so a watching server never sees a half-written or failed version. TF
Serving loads every integer subfolder of its base, so a base that holds anything
else is refused before anything is written (``check_export_base``). Signatures:

- ``serving_default``: ``images`` uint8 [N,H,W,3], any H and W (resized and
  normalised inside the graph exactly as in training) ->
  ``codes`` float32 [N,L] in {-1,+1}, ``packed`` uint8 [N,ceil(L/8)]
  (numpy.packbits order, as ``bgan_tf.codes.pack``), ``hex`` string [N]
  (as ``bgan_tf.codes.to_hex``).
- ``encode_bytes``: ``image_bytes`` string [N] of encoded JPEG/PNG/GIF/BMP
  files (what REST clients send as ``{"b64": ...}``) -> the same outputs.
  Each image is decoded and resized to the backbone input size on its own
  (``tf.map_fn``), so one request may mix image sizes. An image whose header
  claims more than ``max_pixels`` (an export setting, recorded in the metadata)
  is refused before it is decoded; the graphs are in ``bgan_tf.serving.signatures``.
  Files decode to the Python path's pixels (``bgan_tf.serving.tf_decode``: JPEG's
  accurate IDCT, EXIF orientation, alpha on white), so codes equal an index's.

Bad input gives an error from the signature, never a crash: the input specs
reject a wrong dtype or rank; an empty batch returns empty outputs; an image
with no pixels or bytes that are not an image give InvalidArgument with a
message naming the problem. Model metadata (code length, backbone,
preprocessing, training data, commit, model id) is written to
``<version>/assets.extra/bgan_metadata.json`` (TF Serving's folder for extra
files) and to ``<version>/bgan_metadata.json`` beside ``saved_model.pb``.
A full disk while writing is a one-line UserError (``no_space_is_user_error``)
and leaves no version.

TFLite conversion is in ``bgan_tf.serving.tflite``, the checks of both exports
in ``bgan_tf.serving.checks``, the TFLite runtime in ``bgan_tf.inference.tflite``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

from bgan_tf import atomic
from bgan_tf.data.images import DEFAULT_MAX_PIXELS
from bgan_tf.errors import UserError, is_disk_full
from bgan_tf.serving.signatures import serving_fns
from bgan_tf.serving.tf_decode import DECODER_CONTRACT

METADATA_NAME = "bgan_metadata.json"
SIGNATURES = ("serving_default", "encode_bytes")
_VERSION_RE = re.compile(r"^\d+$")
# TF Serving versions are int64.
MAX_VERSION = 2**63 - 1
EXPORT_BASE_WHAT = "TF Serving export base"
# Versions are staged in BASE/.bgan_export.tmp-* (atomic.make_temp_dir's name for the
# target BASE/bgan_export, which is never created): hidden and not an integer, so TF
# Serving ignores them, and atomic.clean_stale removes the ones killed runs left.
_STAGE_NAME = "bgan_export"
# What this exporter named its temp folders before it used atomic (tempfile.mkdtemp).
_LEGACY_TMP_RE = re.compile(r"^\.tmp-\d+-[a-z0-9_]{8}$")
# Bounds of encode_bytes's pixel limit. TensorFlow's decoders have no ceiling of their own
# (Pillow's, for the Python path, is 178,956,970), so the export needs one; past 2^31-1
# pixels (6 GB as RGB) no single upload is worth decoding on a shared server.
MAX_PIXELS_LIMIT = (1, 2**31 - 1)


def check_max_pixels(max_pixels: int | None) -> int:
    """encode_bytes's pixel limit: None -> data.images.DEFAULT_MAX_PIXELS (the library's
    default; the export binaries pass --max_pixels), else bounded by MAX_PIXELS_LIMIT."""
    if max_pixels is None:
        return DEFAULT_MAX_PIXELS
    lo, hi = MAX_PIXELS_LIMIT
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or not lo <= max_pixels <= hi:
        raise UserError(f"--max_pixels must be an integer from {lo:,} to {hi:,}, got {max_pixels!r}")
    return max_pixels


@contextlib.contextmanager
def no_space_is_user_error(target: str | os.PathLike[str], advice: str) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``target`` into one UserError line.

    TensorFlow's savers raise ResourceExhaustedError ("[Op:SaveV2]", a 50-line traceback)
    and Python's writes OSError(ENOSPC / EDQUOT); ``advice`` says what to do (the flag
    that chooses another place). The caller's staging removes what was half written.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only a full disk becomes a line
        if not is_disk_full(e):
            raise
        kind = "" if isinstance(e, OSError) else f" ({e.__class__.__name__})"
        raise UserError(f"no space left on device while writing {target}{kind}; {advice}") from None


# --------------------------------------------------------------------------
# SavedModel export
# --------------------------------------------------------------------------

def export_metadata(loaded, max_pixels: int | None = None) -> dict:
    """What the exported model carries about itself (from the model folder), and
    encode_bytes's pixel limit."""
    meta = loaded.metadata
    cfg = loaded.config
    return {
        "format": "bgan_tf.export/1",
        "model_id": loaded.model_id,
        "num_bits": loaded.num_bits,
        "packed_bytes": (loaded.num_bits + 7) // 8,
        "backbone": meta.get("backbone", {"name": cfg.backbone, "input_size": cfg.backbone_input_size}),
        "preprocessing": meta.get("preprocessing"),
        "training_data": meta.get("training_data"),
        "git_commit": meta.get("git_commit"),
        "created": meta.get("created"),
        "signatures": {
            "serving_default": {"inputs": {"images": "uint8 [N,H,W,3], any H,W"},
                                "outputs": {"codes": "float32 [N,L] +-1", "packed": "uint8 [N,ceil(L/8)] packbits",
                                            "hex": "string [N]"}},
            "encode_bytes": {"inputs": {"image_bytes": "string [N], encoded JPEG/PNG/GIF/BMP"},
                             "outputs": "same as serving_default",
                             "max_pixels": check_max_pixels(max_pixels),
                             "decoder": DECODER_CONTRACT},
        },
    }


def list_versions(base: str | os.PathLike[str]) -> list[int]:
    if not os.path.isdir(base):
        return []
    return sorted(int(n) for n in os.listdir(base) if _VERSION_RE.match(n) and os.path.isdir(os.path.join(base, n)))


def next_version(base: str | os.PathLike[str]) -> int:
    """One more than the largest version in ``base`` (1 for none); UserError when that
    would pass TF Serving's int64 versions."""
    versions = list_versions(base)
    if versions and versions[-1] >= MAX_VERSION:
        raise UserError(f"{base} already holds version {versions[-1]}, the largest TF Serving accepts "
                        f"({MAX_VERSION}); pass a free --version below it or export to a new base")
    return versions[-1] + 1 if versions else 1


def loaded_encoder(model):
    """A LoadedEncoder from a model folder path or a LoadedEncoder."""
    if isinstance(model, (str, os.PathLike)):
        from bgan_tf.inference.keras_model import load_encoder

        return load_encoder(os.fspath(model))
    return model


def build_archive(loaded, max_pixels: int | None = None):
    """A keras.export.ExportArchive with the two serving signatures (``max_pixels``:
    encode_bytes's limit, see ``check_max_pixels``)."""
    import keras
    import tensorflow as tf

    enc = loaded.model
    size = int(loaded.config.backbone_input_size)
    serve_images, serve_bytes = serving_fns(enc, loaded.num_bits, size, check_max_pixels(max_pixels))
    archive = keras.export.ExportArchive()
    archive.track(enc)
    archive.add_endpoint("serving_default", serve_images,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")])
    archive.add_endpoint("encode_bytes", serve_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    return archive


def _write_metadata(folder: str, meta: dict) -> None:
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    for path in (os.path.join(folder, "assets.extra", METADATA_NAME), os.path.join(folder, METADATA_NAME)):
        atomic.write_text(path, text)


def _is_our_temp(name: str) -> bool:
    return name.startswith(f".{_STAGE_NAME}{atomic.TMP_INFIX}") or bool(_LEGACY_TMP_RE.match(name))


def _strangers_in_base(base: Path) -> list[str]:
    """Entries of an export base that are neither integer version folders nor our temps."""
    try:
        entries = sorted(os.scandir(base), key=lambda e: e.name)
    except OSError:
        return []
    return [e.name for e in entries
            if not ((_VERSION_RE.match(e.name) or _is_our_temp(e.name)) and e.is_dir())]


def is_export_base(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding only integer version folders (and our temps)."""
    p = Path(path)
    return p.is_dir() and not _strangers_in_base(p)


def check_export_base(export_base: str | os.PathLike[str], version: int | None = None,
                      inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """Refuse an export base (UserError, nothing touched) that this export must not write.

    Refused: a file; a folder holding anything but integer version folders and our own
    temps (TF Serving would try to load every integer subfolder, and an export must not
    mix into someone else's folder); a base that is, contains or lies inside one of
    ``inputs`` (the model folder); an unwritable path; an existing ``version``.
    Returns the absolute base.
    """
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 0 <= version <= MAX_VERSION):
        raise UserError(f"--version must be an integer from 0 to {MAX_VERSION}, got {version!r}")
    base = Path(export_base).absolute()
    if base.is_dir():
        strangers = _strangers_in_base(base)
        if strangers:
            shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise UserError(f"the export base {export_base} holds entries that are not SavedModel "
                            f"versions ({shown}); TF Serving loads every integer subfolder of its base, so "
                            "give the export a folder of its own (a new or empty one; nothing was changed)")
    base = atomic.claim_output(base, EXPORT_BASE_WHAT, is_export_base)
    atomic.check_disjoint(base, *inputs, what=EXPORT_BASE_WHAT)
    if version is None:
        next_version(base)  # refuses a base whose next version would pass int64, before any work
    elif os.path.lexists(base / str(version)):
        raise UserError(f"version {version} already exists at {base / str(version)}; omit --version to "
                        f"write version {next_version(base)}, or remove the old one")
    return base


def clean_stale_exports(base: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp folders killed exports left in ``base`` (only ours, by name).

    Call it only while holding ``atomic.output_lock(base)``: then no live export owns them.
    """
    b = Path(base).absolute()
    removed = atomic.clean_stale(b / _STAGE_NAME)
    if b.is_dir():
        for p in b.iterdir():
            if _LEGACY_TMP_RE.match(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@dataclasses.dataclass(frozen=True)
class StagedVersion:
    """A complete SavedModel waiting in a hidden folder of the base for its checks."""

    version: int
    path: str  # the hidden temp folder: run the checks here
    final: str  # BASE/<version>: where it is renamed when the checks pass


@contextlib.contextmanager
def staged_saved_model(model, export_base: str | os.PathLike[str], version: int | None = None,
                       inputs: Sequence[str | os.PathLike[str] | None] = (),
                       max_pixels: int | None = None) -> Iterator[StagedVersion]:
    """Write the SavedModel into a hidden temp folder of the base and yield it.

    Run the checks on ``staged.path`` inside the ``with`` block: when the block ends
    cleanly the folder is renamed to ``staged.final``; when it raises (a check failed,
    Ctrl-C) the temp folder is removed and no version appears. The base is checked
    (``check_export_base``) before anything is written and locked throughout, so a
    concurrent export of the same base gets a clear error instead of racing for the
    version number. ``max_pixels``: encode_bytes's limit (``check_max_pixels``). A full
    disk is one UserError line and leaves no version.
    """
    max_pixels = check_max_pixels(max_pixels)
    loaded = loaded_encoder(model)
    inputs = [getattr(loaded, "model_dir", None), *inputs]
    base = check_export_base(export_base, version, inputs)
    with atomic.output_lock(base, EXPORT_BASE_WHAT):
        base = check_export_base(export_base, version, inputs)  # again: it may have changed meanwhile
        created = not base.exists()
        clean_stale_exports(base)
        if version is None:
            version = next_version(base)
        final = base / str(version)
        tmp = atomic.make_temp_dir(base / _STAGE_NAME)
        try:
            with no_space_is_user_error(base, "free space or choose another --export_base (no version was "
                                              "written)"):
                build_archive(loaded, max_pixels).write_out(str(tmp), verbose=False)
                _write_metadata(str(tmp), export_metadata(loaded, max_pixels))
            atomic.open_up(tmp)  # a model server often runs as another user
            yield StagedVersion(version, str(tmp), str(final))
            try:
                if os.path.lexists(final):
                    raise FileExistsError(17, "exists", str(final))
                # We hold the lock; rename still fails rather than overwrite a writer that
                # does not take it.
                os.rename(tmp, final)
            except OSError as e:
                raise UserError(f"could not move the export into {final} ({e.strerror}); another export "
                                "may have written that version: rerun without --version") from None
            atomic.fsync_dir(base)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    base.rmdir()  # only if still empty: the base this failed export made
            raise


def export_saved_model(model, export_base: str | os.PathLike[str], version: int | None = None,
                       check: Callable[[str], None] | None = None,
                       inputs: Sequence[str | os.PathLike[str] | None] = (),
                       max_pixels: int | None = None) -> str:
    """Write ``<export_base>/<version>/`` atomically; return its path.

    ``model``: a model folder or a LoadedEncoder. ``version`` defaults to one
    more than the largest existing integer version (1 for a new base).
    ``check(path)``: run on the staged SavedModel before it becomes a version;
    an exception from it leaves no version. ``max_pixels``: encode_bytes's limit
    (``check_max_pixels``).
    """
    with staged_saved_model(model, export_base, version, inputs, max_pixels) as staged:
        if check is not None:
            check(staged.path)
    return staged.final


def read_export_metadata(version_dir: str) -> dict:
    path = os.path.join(version_dir, "assets.extra", METADATA_NAME)
    if not os.path.isfile(path):
        raise UserError(f"{version_dir} is not a bgan_tf export (no assets.extra/{METADATA_NAME})")
    with open(path) as f:
        return json.load(f)
