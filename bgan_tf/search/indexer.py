"""Build and query a persistent image index (the logic behind `python -m bgan_tf.index`).

Encoders come from bgan_tf.inference.encoders (`load_model`, the `Encoder` protocol).
`read_image` / `decode_image` are bgan_tf.data.images's readers (load_image_file,
decode_image_bytes, with their pixel budget), so indexed, queried and trained images
decode alike; folders are listed by bgan_tf.data.images.list_image_files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from typing import Any, Callable

import numpy as np
from absl import logging

from bgan_tf import atomic
from bgan_tf.data.images import IMAGE_EXTENSIONS, ImageListing, ImageTooLarge, decode_image_bytes, \
    list_image_files, load_image_file
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder
from bgan_tf.search.binary_index import BinaryIndex, SearchResult
from bgan_tf.search.query_encoder import resolve_recorded_model
from bgan_tf.search.store import INDEX_WHAT, is_index


# ------------------------------------------------------------------ images
def decode_image(data: bytes, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3]; UserError when empty, undecodable or over max_pixels.

    The project's one decoder (bgan_tf.data.images.decode_image_bytes): grayscale is
    replicated, alpha composited on white, exactly as training reads images.
    """
    return decode_image_bytes(data, what=what, max_pixels=max_pixels)


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Image file -> uint8 [H, W, 3]; UserError when missing, undecodable or over max_pixels."""
    return load_image_file(os.fspath(path), max_pixels=max_pixels)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` safe to print on one line of a terminal.

    File names that are not valid UTF-8 come from the lister as surrogate escapes, which
    a UTF-8 stdout refuses: their bytes show as \\xNN. Control characters (newline, ESC,
    bidi overrides) show escaped too: a name holding a newline and ANSI escapes printed
    a spoofed row in `query`'s table (issue 27 case 21).
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


# ------------------------------------------------------------------ encoding
# Decoded pixels a build holds and hands to one encoder call: 16 megapixels is 48 MB
# as uint8 (192 MB once a Keras encoder casts it to float32). Why: 64 phone photos
# (4000x3000) at the default --batch_size were 2.3 GB decoded, stacked again, then cast
# (issue 27 case 19). The images are not resized first: the codes stay bit for bit the
# ones `query` and the service compute for the same file at full size.
ENCODE_PIXEL_BUDGET = 16_000_000


def encode_images(encoder: Encoder, images: list[np.ndarray]) -> np.ndarray:
    """Encode images of possibly different sizes: encoder calls per shape group, each of
    at most ENCODE_PIXEL_BUDGET pixels (one image when it alone is larger)."""
    out = np.zeros((len(images), encoder.num_bits), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for shape, idx in groups.items():
        step = max(1, ENCODE_PIXEL_BUDGET // max(1, shape[0] * shape[1]))
        for s in range(0, len(idx), step):
            part = idx[s:s + step]
            out[part] = encoder.encode(np.stack([images[i] for i in part]))
    if not np.isfinite(out).all():
        # A diverged model (NaN weights) maps every image to the same code: refuse it
        # instead of writing an index that answers every query alike (issue 27, item 3).
        raise UserError(f"the model {getattr(encoder, 'model_id', '')!r} produced non-finite codes "
                        f"for {int((~np.isfinite(out).all(axis=1)).sum())} of {len(images)} images: "
                        "its weights are broken (diverged training?); retrain it")
    return out


# ------------------------------------------------------------------ build
@dataclasses.dataclass
class BuildReport:
    total: int  # image files listed
    added: int
    skipped: int  # already in the index
    failed: list[str]  # unreadable: "path: reason"
    count: int  # rows in the index after the build
    seconds: float
    too_large: list[str] = dataclasses.field(default_factory=list)  # over --max_pixels
    unsupported: int = 0  # files skipped for their extension
    links: int = 0  # symbolic links not followed (ImageListing.links)
    unlisted: int = 0  # folders that could not be listed

    def summary(self, index_path: str | os.PathLike[str]) -> str:
        # The first part is what the summary always said (scripts may match it).
        return (f"indexed {self.added} new images ({self.skipped} already indexed, "
                f"{len(self.failed)} unreadable); skipped {len(self.too_large)} over the pixel "
                f"budget and {self.unsupported} with unsupported extensions; index holds "
                f"{self.count} -> {printable(os.fspath(index_path))}"
                + (f"; not followed: {self.links} symbolic link(s) to folders or to files outside "
                   "the image folder" if self.links else "")
                + (f"; {self.unlisted} folder(s) could not be listed" if self.unlisted else ""))


class Progress:
    """tqdm when available, else a line every few seconds (no dependency needed)."""

    def __init__(self, total: int, enabled: bool, unit: str = "indexed") -> None:
        self.total, self.n, self.enabled, self.unit = total, 0, enabled, unit
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (time.time() - self._last > 5 or self.n == self.total):
            self._last = time.time()
            print(f"{self.unit} {self.n}/{self.total}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def prepare_build(images_dir: str | os.PathLike[str], index_path: str | os.PathLike[str]) -> ImageListing:
    """Check the paths of a build and list its images, before any model is loaded.

    Refuses (UserError, nothing touched) an index path that overlaps the image folder,
    is a file, is not writable or is a non-empty folder that is not an index, and an
    image folder without a single image file. The listing's paths are absolute: the
    index keys images by absolute path, so a rerun from another directory resumes.
    """
    images_dir, index_path = os.fspath(images_dir), os.fspath(index_path)
    if not os.path.isdir(images_dir):
        raise UserError(f"image folder not found: {images_dir}")
    atomic.check_disjoint(index_path, images_dir, what=INDEX_WHAT)
    atomic.recover_dir(index_path, is_index)  # a swap interrupted by a kill: the index is back
    atomic.claim_output(index_path, INDEX_WHAT, is_index)
    listing = list_image_files(images_dir)
    listing.entries = [(os.path.abspath(p), label) for p, label in listing.entries]
    if not listing.entries:
        skips = f"; {listing.describe_skips()}" if listing.describe_skips() else ""
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {images_dir}{skips}; "
                        "nothing was indexed")
    return listing


def build_index(
    encoder: Encoder,
    images_dir: str | os.PathLike[str],
    index_path: str | os.PathLike[str],
    *,
    backend: str = "flat",
    backend_knobs: dict[str, Any] | None = None,
    batch_size: int = 64,
    save_every: int = 1000,
    progress: bool = True,
    model_ref: str | None = None,
    on_batch: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
    listing: ImageListing | None = None,
) -> BuildReport:
    """Index every image under images_dir into index_path, resumably.

    Images already in the index (keyed by absolute path) are skipped, so a rerun
    after a crash or after adding files only encodes what is new. The index is
    saved atomically every `save_every` new images and at the end. The index's
    writer lock is held from load to the last save, so a concurrent build into the
    same index fails at once (UserError) instead of silently dropping images.
    ``listing``: the result of `prepare_build`, when the caller already checked.
    """
    t0 = time.time()
    if int(batch_size) < 1 or int(save_every) < 1:
        raise UserError(f"batch_size and save_every must be at least 1, got {batch_size} and {save_every}")
    batch_size = int(batch_size)
    if listing is None:
        # Checked before the lock is taken: the lock file goes beside the index path,
        # which must not be inside the images or next to a file we refuse.
        listing = prepare_build(images_dir, index_path)
    with atomic.output_lock(index_path, INDEX_WHAT):
        # Again under the lock: another writer may have changed the path meanwhile.
        atomic.recover_dir(index_path, is_index)
        atomic.claim_output(index_path, INDEX_WHAT, is_index)
        return _build_locked(encoder, images_dir, index_path, listing, t0, backend=backend,
                             backend_knobs=backend_knobs, batch_size=batch_size,
                             save_every=int(save_every), progress=progress, model_ref=model_ref,
                             on_batch=on_batch, max_pixels=max_pixels)


def _build_locked(encoder: Encoder, images_dir: str | os.PathLike[str],
                  index_path: str | os.PathLike[str], listing: ImageListing, t0: float, *,
                  backend: str, backend_knobs: dict[str, Any] | None, batch_size: int,
                  save_every: int, progress: bool, model_ref: str | None,
                  on_batch: Callable[[int], None] | None, max_pixels: int | None) -> BuildReport:
    files = listing.entries  # unsupported files are counted in the report's summary
    existed = is_index(index_path)
    if existed:
        index = BinaryIndex.load(index_path, expect_num_bits=encoder.num_bits,
                                 expect_model_id=encoder.model_id)
    else:
        index = BinaryIndex.create(encoder.num_bits, encoder.model_id, backend, **(backend_knobs or {}))
    if model_ref:
        # By absolute path: a query from another folder finds it (issue 29 item 4).
        index.store.extra["model"] = os.path.abspath(model_ref) if os.path.exists(model_ref) else model_ref
    index.store.extra.setdefault("model_metadata", _jsonable(getattr(encoder, "metadata", {})))
    # The service shows paths relative to the first root and serves files only from
    # inside the recorded roots (search/files.py): every folder a build read is one.
    root = os.path.abspath(images_dir)
    index.store.extra.setdefault("image_root", root)
    roots = index.store.extra.setdefault("image_roots", [index.store.extra["image_root"]])
    if root not in roots:
        roots.append(root)
    done = {m.get("path") for m in index.store.metadata_rows()}
    todo = [(p, lab) for p, lab in files if p not in done]
    bar = Progress(len(todo), progress)
    added, failed, too_large, since_save = 0, [], [], 0
    try:
        for s in range(0, len(todo), batch_size):
            batch = todo[s : s + batch_size]
            imgs, meta, held = [], [], 0
            for path, label in batch:
                if held >= ENCODE_PIXEL_BUDGET:  # encode what is held before decoding more
                    index.add(encode_images(encoder, imgs), metadata=meta)
                    added, since_save = added + len(imgs), since_save + len(imgs)
                    imgs, meta, held = [], [], 0
                try:
                    imgs.append(read_image(path, max_pixels=max_pixels))
                    held += imgs[-1].shape[0] * imgs[-1].shape[1]
                except ImageTooLarge as e:
                    # A counted, logged skip: one huge file must not stop the build.
                    logging.warning("skipping %s", printable(str(e)))
                    too_large.append(str(e))
                    continue
                except UserError as e:
                    failed.append(str(e) if str(e).startswith(path) else f"{path}: {e}")
                    continue
                m: dict[str, Any] = {"path": path}
                if label is not None:
                    m["label"] = label
                meta.append(m)
            if imgs:
                index.add(encode_images(encoder, imgs), metadata=meta)
                added += len(imgs)
                since_save += len(imgs)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(added)
            if since_save >= save_every:
                index.save(index_path)
                since_save = 0
    finally:
        bar.close()
    if len(index) == 0:
        # Train and evaluate refuse such a folder too; an empty index would only
        # hide the problem until the first query.
        raise UserError(f"none of the {len(files)} image files under {printable(os.fspath(images_dir))} "
                        f"could be read ({len(failed)} unreadable, {len(too_large)} over the pixel "
                        f"budget{': ' + printable(failed[0]) if failed else ''}); no index was written")
    if added or not existed:
        index.save(index_path)
    warn_if_one_code(index, index_path)
    return BuildReport(len(files), added, len(files) - len(todo), failed, len(index), time.time() - t0,
                       too_large=too_large, unsupported=len(listing.unsupported), links=len(listing.links),
                       unlisted=len(listing.unlisted))


def warn_if_one_code(index: BinaryIndex, index_path: str | os.PathLike[str]) -> bool:
    """A loud stderr line when more than a handful of images share one single code: every
    query then ties with every image (a collapsed or diverged model). True if it warned."""
    if len(index) <= 8 or np.unique(index.store.packed, axis=0).shape[0] > 1:
        return False
    print(f"warning: all {len(index)} images in {printable(os.fspath(index_path))} have the same code: "
          "the model maps every image alike (collapsed or diverged training?), so search cannot "
          "tell them apart; retrain the model", file=sys.stderr)
    return True


def _jsonable(d: Any) -> Any:
    import json

    try:
        json.dumps(d)
        return d
    except (TypeError, ValueError):
        return {k: str(v) for k, v in dict(d).items()}


# ------------------------------------------------------------------ query
def model_for_index(index_path: str | os.PathLike[str], model: str | None) -> str:
    """The model to encode queries with: the given one, else the one recorded at build
    (`query_encoder.resolve_recorded_model`)."""
    return resolve_recorded_model(index_path, model)


def open_index(index_path: str | os.PathLike[str], encoder: Encoder, **kwargs: Any) -> BinaryIndex:
    """Load an index, refusing one built by a different model or code length."""
    return BinaryIndex.load(index_path, expect_num_bits=encoder.num_bits,
                            expect_model_id=encoder.model_id, **kwargs)


def query_index(index: BinaryIndex, encoder: Encoder, image_path: str, k: int,
                max_pixels: int | None = None) -> list[SearchResult]:
    """Top-k neighbours of one image file (at most the index size; UserError if it is too large)."""
    signs = encode_images(encoder, [read_image(image_path, max_pixels=max_pixels)])
    return index.search_one(signs[0], k)


def format_results(results: list[SearchResult]) -> str:
    lines = [f"{'rank':>4}  {'id':>8}  {'dist':>4}  path"]
    for r, res in enumerate(results, 1):
        lines.append(f"{r:>4}  {res.id:>8}  {res.distance:>4}  {printable(str(res.metadata.get('path', '')))}")
    return "\n".join(lines)
