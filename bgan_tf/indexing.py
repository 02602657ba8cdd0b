"""Build and query a persistent image index (the logic behind `python -m bgan_tf.index`).

Also holds the small seams the search side needs from the rest of the project,
so each can be swapped in one place:
- `read_image` / `decode_image`: bgan_tf.data's readers (load_image_file,
  decode_image_bytes), so indexed, queried and trained images decode alike;
- `load_model`: bgan_tf.inference.load_encoder(model_dir), an exported
  `.tflite` encoder (bgan_tf.serving.TFLiteEncoder), or the training-free
  `pixel-lsh:BITS[:SEED]` baseline (random hyperplanes over 16x16 pixels), which
  the tests, the demo and the load benchmark use instead of a trained model.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from bgan_tf.data import decode_image_bytes, load_image_file
from bgan_tf.errors import UserError
from bgan_tf.search import BinaryIndex, SearchResult
from bgan_tf.store import read_manifest

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class Encoder(Protocol):
    num_bits: int
    model_id: str
    metadata: dict

    def encode(self, images: np.ndarray) -> np.ndarray: ...


# ------------------------------------------------------------------ images
def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3]; UserError when empty or undecodable.

    The project's one decoder (bgan_tf.data.decode_image_bytes): grayscale is
    replicated, alpha composited on white, exactly as training reads images.
    """
    return decode_image_bytes(data, what=what)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Image file -> uint8 [H, W, 3]; UserError when missing or undecodable."""
    return load_image_file(str(path))


def list_images(root: str | os.PathLike[str]) -> list[tuple[str, str | None]]:
    """(absolute path, label or None) for every image under root, sorted.

    A file inside a subfolder gets the first subfolder's name as its label
    (the usual class-folder layout); loose files get None.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise UserError(f"image folder not found: {root}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root_p):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root_p)
        label = None if rel == "." else rel.split(os.sep)[0]
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                out.append((os.path.abspath(os.path.join(dirpath, name)), label))
    return out


# ------------------------------------------------------------------ models
class PixelLSHEncoder:
    """Training-free baseline encoder: sign of random projections of 16x16 pixels.

    Deterministic for a (num_bits, seed) pair, so its model_id is stable. Similar
    images get similar codes, which is enough for demos, tests and load tests.
    """

    SIZE = 16

    def __init__(self, num_bits: int = 64, seed: int = 0) -> None:
        self.num_bits = int(num_bits)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self._proj = rng.standard_normal((self.SIZE * self.SIZE * 3, self.num_bits)).astype(np.float32)
        self.model_id = f"pixel-lsh:{self.num_bits}:{self.seed}"
        self.metadata = {"kind": "pixel-lsh", "num_bits": self.num_bits, "seed": self.seed}

    def encode(self, images: np.ndarray) -> np.ndarray:
        imgs = np.asarray(images)
        if imgs.ndim == 3:
            imgs = imgs[None]
        n, h, w = imgs.shape[:3]
        # Nearest-neighbour resize by index sampling: no extra dependency, any size.
        ys = (np.arange(self.SIZE) * h // self.SIZE).astype(np.int64)
        xs = (np.arange(self.SIZE) * w // self.SIZE).astype(np.int64)
        small = imgs[:, ys][:, :, xs].reshape(n, -1).astype(np.float32) / 255.0
        small -= small.mean(axis=1, keepdims=True)
        return np.where(small @ self._proj >= 0, 1.0, -1.0).astype(np.float32)


def load_model(model: str) -> Encoder:
    """A model folder (bgan_tf.inference.load_encoder), a `.tflite` export or `pixel-lsh:BITS[:SEED]`."""
    if model.startswith("pixel-lsh"):
        parts = model.split(":")
        try:
            bits = int(parts[1]) if len(parts) > 1 else 64
            seed = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            raise UserError(f"bad model spec {model!r}; use pixel-lsh:BITS[:SEED]") from None
        return PixelLSHEncoder(bits, seed)
    if model.endswith(".tflite"):
        # An exported TFLite encoder (python -m export.tflite): lets a deployment
        # whose devices run the int8 file index with that same file, so device
        # and index codes agree bit for bit.
        from bgan_tf.serving import TFLiteEncoder

        return TFLiteEncoder(model)
    if not os.path.isdir(model):
        raise UserError(f"model folder not found: {model}; train one with python -m bgan_tf.train")
    try:
        from bgan_tf.inference import load_encoder
    except ImportError as e:
        raise UserError(f"cannot load trained models in this build ({e})") from None
    return load_encoder(model)


def encode_images(encoder: Encoder, images: list[np.ndarray]) -> np.ndarray:
    """Encode images of possibly different sizes: one encoder call per shape group."""
    out = np.zeros((len(images), encoder.num_bits), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for idx in groups.values():
        out[idx] = encoder.encode(np.stack([images[i] for i in idx]))
    return out


# ------------------------------------------------------------------ build
@dataclasses.dataclass
class BuildReport:
    total: int
    added: int
    skipped: int
    failed: list[str]
    count: int
    seconds: float


class _Progress:
    """tqdm when available, else a line every few seconds (no dependency needed)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.n, self.enabled = total, 0, enabled
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
            print(f"indexed {self.n}/{self.total}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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
) -> BuildReport:
    """Index every image under images_dir into index_path, resumably.

    Images already in the index (keyed by absolute path) are skipped, so a rerun
    after a crash or after adding files only encodes what is new. The index is
    saved atomically every `save_every` new images and at the end.
    """
    t0 = time.time()
    files = list_images(images_dir)
    if os.path.exists(os.path.join(index_path, "manifest.json")) or _has_backup(index_path):
        index = BinaryIndex.load(index_path, expect_num_bits=encoder.num_bits,
                                 expect_model_id=encoder.model_id)
    else:
        index = BinaryIndex.create(encoder.num_bits, encoder.model_id, backend, **(backend_knobs or {}))
    if model_ref:
        index.store.extra["model"] = model_ref
    index.store.extra.setdefault("model_metadata", _jsonable(getattr(encoder, "metadata", {})))
    done = {m.get("path") for m in index.store.metadata_rows()}
    todo = [(p, lab) for p, lab in files if p not in done]
    bar = _Progress(len(todo), progress)
    added, failed, since_save = 0, [], 0
    try:
        for s in range(0, len(todo), max(1, batch_size)):
            batch = todo[s : s + batch_size]
            imgs, meta = [], []
            for path, label in batch:
                try:
                    imgs.append(read_image(path))
                except UserError as e:
                    failed.append(f"{path}: {e}")
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
    if added or not os.path.exists(os.path.join(index_path, "manifest.json")):
        index.save(index_path)
    return BuildReport(len(files), added, len(files) - len(todo), failed, len(index), time.time() - t0)


def _has_backup(index_path: str | os.PathLike[str]) -> bool:
    p = Path(index_path).absolute()
    return any(p.parent.glob(f".{p.name}.old-*")) if p.parent.is_dir() else False


def _jsonable(d: Any) -> Any:
    import json

    try:
        json.dumps(d)
        return d
    except (TypeError, ValueError):
        return {k: str(v) for k, v in dict(d).items()}


# ------------------------------------------------------------------ query
def model_for_index(index_path: str | os.PathLike[str], model: str | None) -> str:
    """The model to encode queries with: the given one, else the one recorded at build."""
    if model:
        return model
    recorded = read_manifest(index_path).get("extra", {}).get("model")
    if not recorded:
        raise UserError(f"index {index_path} does not record its model; pass --model")
    return recorded


def open_index(index_path: str | os.PathLike[str], encoder: Encoder, **kwargs: Any) -> BinaryIndex:
    """Load an index, refusing one built by a different model or code length."""
    return BinaryIndex.load(index_path, expect_num_bits=encoder.num_bits,
                            expect_model_id=encoder.model_id, **kwargs)


def query_index(index: BinaryIndex, encoder: Encoder, image_path: str, k: int) -> list[SearchResult]:
    """Top-k neighbours of one image file."""
    signs = encoder.encode(read_image(image_path)[None])
    return index.search_one(signs[0], k)


def format_results(results: list[SearchResult]) -> str:
    lines = [f"{'rank':>4}  {'id':>8}  {'dist':>4}  path"]
    for r, res in enumerate(results, 1):
        lines.append(f"{r:>4}  {res.id:>8}  {res.distance:>4}  {res.metadata.get('path', '')}")
    return "\n".join(lines)
