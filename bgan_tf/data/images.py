"""Image sources and the tf.data pipeline that feeds training.

Sources (``load_images(spec)``), all returning ``ImageData``:
- ``digits``: scikit-learn's 1,797 labelled 8x8 digits (shipped inside the
  scikit-learn wheel: the offline default), upsampled to 32x32 RGB.
- ``tfds:NAME``: a TFDS dataset, from ``data_dir``; downloads only when
  ``download=True`` (tests never download).
- ``folder:PATH``: an image folder; class subfolders give labels (kept for
  evaluation only), loose files have no label.
- ``npz:PATH``: arrays ``images`` [N,H,W(,C)] and optional ``labels``.

Bad files never crash deep inside TensorFlow: grayscale is replicated to
RGB, RGBA is composited on white, 16-bit and float images are scaled to 8 bits,
odd sizes are resized, and undecodable or empty files and images over the pixel
budget (checked from the header, before decoding) are skipped with a counted,
logged warning (or raise ``UserError`` / ``ImageTooLarge`` when reading a single file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import struct
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from bgan_tf.errors import UserError

if TYPE_CHECKING:
    from bgan_tf.config import BGANConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The pixel budget of one decoded image, checked from the header before any pixel is
# decoded: 40 megapixels takes any camera photo (120 MB as RGB) while a 97 KB PNG that
# claims 10000x10000 pixels is refused instead of costing 300 MB and seconds to decode.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageTooLarge(UserError):
    """An image whose header claims more pixels than the budget (nothing was decoded)."""


@dataclasses.dataclass
class ImageListing:
    """What `list_image_files` found under a folder."""

    entries: list[tuple[str, str | None]]  # (path, class subfolder or None), sorted
    unsupported: list[str]  # files skipped because of their extension
    hidden: int = 0  # dot-files and files in dot-folders, never read

    def describe_skips(self) -> str:
        """'' or e.g. '3 files with unsupported extensions (.txt, .heic)'."""
        if not self.unsupported:
            return ""
        exts = sorted({os.path.splitext(p)[1].lower() or "(none)" for p in self.unsupported})
        return (f"{len(self.unsupported)} file(s) with unsupported extensions ({', '.join(exts[:6])}); "
                f"supported: {', '.join(IMAGE_EXTENSIONS)}")


@dataclasses.dataclass
class ImageData:
    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray | None  # int [N] or multi-hot [N, C], evaluation only
    names: list[str] | None = None  # source paths or ids
    class_names: list[str] | None = None
    # Files a folder load passed over: {"unsupported": n, "unreadable": n, "too_large": n}.
    skipped: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: np.ndarray) -> "ImageData":
        idx = np.asarray(idx)
        return ImageData(
            self.images[idx],
            None if self.labels is None else self.labels[idx],
            None if self.names is None else [self.names[i] for i in idx],
            self.class_names,
            self.skipped,
        )

    def fingerprint(self) -> str:
        """Content hash of the pixels (cache key for features)."""
        h = hashlib.sha256()
        h.update(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).data)
        return h.hexdigest()[:16]


def to_rgb_uint8(arr: np.ndarray, what: str = "image") -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array -> uint8 HxWx3."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise UserError(f"{what}: expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise UserError(f"{what}: image has zero size")
    if a.dtype == np.uint16:
        # 16-bit arrays (npz, TFDS) span 0..65535: scale like 16-bit PNGs, never clip.
        a = np.round(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = (a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return a


# The formats Pillow may decode: those of IMAGE_EXTENSIONS (Pillow's JPEG opener also
# returns the MPO files many phones write). An upload can be any bytes: without this
# list Pillow would also try EPS (which runs Ghostscript), PSD, ICNS and dozens more.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_to_uint8(a: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """A one-channel integer or float image -> uint8, scaled, never clipped.

    16-bit data (and 32-bit "I" data within 0..65535) is x * 255 / 65535 rounded,
    so a 16-bit white is 255 and a mid grey 128. Float data in [0, 1] is x * 255,
    in [0, 255] is kept, in [0, 65535] is read as 16-bit; any other range (negative
    or larger values, e.g. depth maps) is stretched from its min..max to 0..255.
    """
    # float32 halves the temporary of a large image; 8-bit output needs no more.
    a = np.nan_to_num(np.asarray(a, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if sixteen_bit:
        scaled = a * (255.0 / 65535.0)
    elif lo >= 0 and hi <= 1.0:
        scaled = a * 255.0
    elif lo >= 0 and hi <= 255.0:
        scaled = a
    elif lo >= 0 and hi <= 65535.0:
        scaled = a * (255.0 / 65535.0)
    else:
        scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _pil_to_array(im) -> np.ndarray:
    """A loaded Pillow image -> uint8 HxW, HxWx3 or HxWx4 (alpha kept for compositing)."""
    if im.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("RGB"/"L") clips these at 255: a 16-bit grey photo
        # would come out almost all white.
        return _grey_to_uint8(np.asarray(im), sixteen_bit=True)
    if im.mode == "I":
        a = np.asarray(im)
        # 32-bit integer data: 16-bit when it fits (how TIFF/PNG readers hand over 16-bit
        # grey), otherwise its own range.
        return _grey_to_uint8(a, sixteen_bit=a.size > 0 and int(a.min()) >= 0 and int(a.max()) <= 65535)
    if im.mode == "F":
        return _grey_to_uint8(np.asarray(im), sixteen_bit=False)
    # 16-bit RGB(A) and grey+alpha PNGs: Pillow itself reduces them to 8 bits per
    # channel by keeping the high byte (x >> 8): within one level of x * 255 / 65535
    # rounded and never clipped, so they need nothing here.
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    return np.asarray(im)


def _bomb_message(what: str, err: Exception, limit: int) -> str:
    # Pillow refuses on its own (in Image.open) past twice Image.MAX_IMAGE_PIXELS; its
    # message names both counts: "Image size (400000000 pixels) exceeds limit of
    # 178956970 pixels, could be decompression bomb DOS attack."
    text = str(err)
    m = re.search(r"\((\d+) pixels\)", text)
    claimed = f"{int(m.group(1)):,} pixels" if m else "more pixels than the decoder allows"
    m = re.search(r"limit of (\d+) pixels", text)
    if m and int(m.group(1)) < limit:  # Pillow's fixed ceiling: --max_pixels cannot lift it
        return f"{what}: {claimed} is over the decoder's limit of {int(m.group(1)):,} pixels; downscale it"
    return f"{what}: {claimed} is over the limit of {limit:,} pixels; downscale it or raise --max_pixels"


def decode_image_bytes(data: bytes, what: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes -> uint8 HxWx3, or UserError naming the problem.

    ``max_pixels`` (default DEFAULT_MAX_PIXELS) is checked against the header before
    the pixels are decoded; a larger image (or one Pillow itself calls a decompression
    bomb) raises ImageTooLarge, a UserError with a one-line message. Grayscale is
    replicated to RGB, alpha composited on white, and 16-bit, 32-bit and float images
    are scaled to 8 bits (see `_grey_to_uint8`), not clipped.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UserError(f"{what}: file is empty; pass a JPEG, PNG, BMP, GIF or WebP image")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if limit < 1:
        raise UserError(f"max_pixels must be at least 1, got {limit}")
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as im:  # reads the header only
            width, height = im.size
            if width * height > limit:
                raise ImageTooLarge(f"{what}: {width}x{height} pixels is over the limit of {limit:,} "
                                    "pixels; downscale it or raise --max_pixels")
            im.load()
            arr = _pil_to_array(im)
    except UserError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(_bomb_message(what, e, limit)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError,
            TypeError, ZeroDivisionError, struct.error) as e:
        # Any bytes can arrive (uploads, a stray file with an image extension) and
        # Pillow's parsers raise all of these on malformed headers.
        raise UserError(f"{what}: cannot decode image ({e.__class__.__name__}); "
                        "pass a JPEG, PNG, BMP, GIF or WebP file") from None
    return to_rgb_uint8(arr, what)


def load_image_file(path: str, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file -> uint8 HxWx3 (UserError if missing, undecodable or too large)."""
    if not os.path.isfile(path):
        raise UserError(f"image not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    return decode_image_bytes(data, what=path, max_pixels=max_pixels)


def resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def load_digits(size: int = 32) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = (d.images / 16.0 * 255.0).round().astype(np.uint8)  # [N, 8, 8], 0..16 -> 0..255
    out = np.stack([resize_uint8(np.repeat(im[..., None], 3, -1), size) for im in imgs])
    return ImageData(out, d.target.astype(np.int64), [f"digits/{i}" for i in range(len(out))],
                     [str(i) for i in range(10)])


def list_image_files(root: str) -> ImageListing:
    """Every image file under ``root`` with its class (first subfolder, or None), sorted.

    The project's one folder lister (training, evaluation and indexing read folders
    alike). Files with other extensions are listed in ``unsupported`` so callers can say
    what they skipped; dot-files and dot-folders (.DS_Store, .git, our own temps) are
    never read. Names that are not valid UTF-8 come back surrogate-escaped, as os.walk
    gives them (os.fsencode turns them back into the original bytes).
    """
    if not os.path.isdir(root):
        raise UserError(f"image folder not found: {root}")
    entries, unsupported, hidden = [], [], 0
    for dirpath, dirnames, filenames in os.walk(root):
        hidden += sum(d.startswith(".") for d in dirnames)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        cls = None if rel == "." else rel.split(os.sep)[0]
        for fn in sorted(filenames):
            if fn.startswith("."):
                hidden += 1
            elif fn.lower().endswith(IMAGE_EXTENSIONS):
                entries.append((os.path.join(dirpath, fn), cls))
            else:
                unsupported.append(os.path.join(dirpath, fn))
    return ImageListing(entries, unsupported, hidden)


def load_folder(root: str, size: int | None = None, max_images: int | None = None,
                seed: int = 0, max_pixels: int | None = None) -> ImageData:
    """Image folder -> ImageData. Class subfolders become labels (evaluation only).

    ``size``: every image is resized to size x size; None keeps the common size
    when all images share one and otherwise resizes to the first image's.
    ``max_images``: a seeded random sample of that many files (kept in sorted
    order), not the first N: files are listed class folder by class folder, so
    the first N of a class-structured folder would be one or two classes.
    ``max_pixels``: the per-image pixel budget (default DEFAULT_MAX_PIXELS).

    Files with other extensions, undecodable files and images over the pixel budget
    are skipped, never fatal (one bad file would otherwise stop every rerun at the
    same place): each is logged, and one warning gives the counts, which are also
    in ``ImageData.skipped``.
    """
    listing = list_image_files(root)
    entries = listing.entries
    if max_images and len(entries) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(entries), max_images, replace=False))
        entries = [entries[i] for i in keep]
    skipped = {"unsupported": len(listing.unsupported), "unreadable": 0, "too_large": 0}
    if not entries:
        _log_skips(root, skipped, listing)
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    images, classes, names = [], [], []
    for path, cls in entries:
        try:
            img = load_image_file(path, max_pixels=max_pixels)
        except ImageTooLarge as e:
            skipped["too_large"] += 1
            logging.warning("skipping %s", e)
            continue
        except UserError as e:
            skipped["unreadable"] += 1
            logging.warning("skipping %s", e)
            continue
        if size is None:
            size_hw = img.shape[:2]
            size = size_hw[0] if size_hw[0] == size_hw[1] else max(size_hw)
        images.append(resize_uint8(img, size))
        classes.append(cls)
        names.append(path)
    _log_skips(root, skipped, listing)
    if not images:
        raise UserError(f"none of the {len(entries)} image files under {root} could be decoded "
                        f"({skipped['unreadable']} unreadable, {skipped['too_large']} over the pixel limit)")
    labels = None
    class_names = None
    if all(c is not None for c in classes):
        class_names = sorted(set(classes))
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = np.array([lookup[c] for c in classes], np.int64)
    return ImageData(np.stack(images), labels, names, class_names, skipped)


def _log_skips(root: str, skipped: dict[str, int], listing: ImageListing) -> None:
    """One warning with every kind of skipped file, so none passes unnoticed."""
    parts = []
    if skipped["unsupported"]:
        parts.append(listing.describe_skips())
    if skipped["unreadable"]:
        parts.append(f"{skipped['unreadable']} unreadable file(s)")
    if skipped["too_large"]:
        parts.append(f"{skipped['too_large']} image(s) over the pixel limit")
    if parts:
        logging.warning("skipped under %s: %s", root, "; ".join(parts))


def load_npz(path: str, size: int | None = None) -> ImageData:
    if not os.path.isfile(path):
        raise UserError(f"npz file not found: {path}")
    try:
        z = np.load(path)
    except Exception as e:
        raise UserError(f"cannot read {path} as .npz ({e.__class__.__name__}); save with numpy.savez(images=..., labels=...)") from None
    with z:
        if "images" not in z:
            raise UserError(f"{path} has no 'images' array (found: {', '.join(z.files) or 'nothing'})")
        raw = z["images"]
        labels = z["labels"] if "labels" in z else None
    if raw.ndim not in (3, 4) or raw.shape[0] == 0:
        raise UserError(f"{path}: 'images' must be [N,H,W] or [N,H,W,C] with N > 0, got shape {raw.shape}")
    if raw.dtype != np.uint8:
        if raw.dtype.kind == "f" and raw.size and float(raw.max()) <= 1.0:
            raw = raw * 255.0  # floats in [0, 1]
    imgs = np.stack([to_rgb_uint8(im, f"{path}[{i}]") for i, im in enumerate(raw)])
    if size is not None:
        imgs = np.stack([resize_uint8(im, size) for im in imgs])
    if labels is not None and len(labels) != len(imgs):
        raise UserError(f"{path}: {len(labels)} labels for {len(imgs)} images")
    return ImageData(imgs, labels, [f"{os.path.basename(path)}/{i}" for i in range(len(imgs))])


def load_tfds(name: str, split: str = "train", data_dir: str | None = None, download: bool = False,
              max_images: int | None = None) -> ImageData:
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(name, split=split, data_dir=data_dir, download=download, with_info=True,
                             try_gcs=False)
    except Exception as e:  # tfds raises assorted types for "not prepared"
        hint = "pass --download (needs network) or --data_dir with a prepared copy" if not download else "check the name and network"
        raise UserError(f"TFDS dataset {name!r} ({split}) is not available: {str(e).splitlines()[0][:200]}; {hint}") from None
    feats = info.features
    image_key = next((k for k in ("image", "img") if k in feats), None)
    if image_key is None:
        raise UserError(f"TFDS dataset {name!r} has no 'image' feature")
    label_key = "label" if "label" in feats else None
    if max_images:
        ds = ds.take(max_images)
    images, labels = [], []
    for ex in tfds.as_numpy(ds):
        images.append(to_rgb_uint8(ex[image_key]))
        if label_key:
            labels.append(ex[label_key])
    if not images:
        raise UserError(f"TFDS dataset {name!r} split {split!r} is empty")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        size = max(images[0].shape[:2])
        images = [resize_uint8(im, size) for im in images]
    names = [f"{name}/{split}/{i}" for i in range(len(images))]
    class_names = list(feats[label_key].names) if label_key and hasattr(feats[label_key], "names") else None
    return ImageData(np.stack(images), np.asarray(labels) if label_key else None, names, class_names)


def load_images(spec: str, *, tfds_split: str = "train", data_dir: str | None = None, download: bool = False,
                max_images: int | None = None, size: int | None = None,
                max_pixels: int | None = None) -> ImageData:
    """Dispatch on a dataset spec string (see the module docstring).

    ``max_pixels``: the per-image pixel budget of folder sources (default DEFAULT_MAX_PIXELS).
    """
    if spec == "digits":
        data = load_digits(size or 32)
    elif spec.startswith("tfds:"):
        data = load_tfds(spec[5:], tfds_split, data_dir, download, max_images)
    elif spec.startswith("folder:"):
        data = load_folder(spec[7:], size, max_images, max_pixels=max_pixels)
    elif spec.startswith("npz:"):
        data = load_npz(spec[4:], size)
    elif os.path.isdir(spec):
        data = load_folder(spec, size, max_images, max_pixels=max_pixels)
    elif spec.endswith(".npz"):
        data = load_npz(spec, size)
    else:
        raise UserError(f"unknown --dataset {spec!r}: use digits, tfds:NAME, folder:PATH or npz:PATH")
    if max_images and len(data) > max_images:
        data = data.subset(np.arange(max_images))
    return data


def images_for_gan(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 [N,H,W,3] -> float32 [N,S,S,3] in [0,1] at the GAN's resolution."""
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = np.stack([resize_uint8(im, image_size) for im in images])
    return images.astype(np.float32) / 255.0


def training_dataset(gan_images: np.ndarray, encoder_inputs: np.ndarray, batch_size: int, seed: int,
                     first_epoch: int, epochs: int):
    """tf.data pipeline yielding {"image", "x", "index"} batches.

    The order of epoch e is a stateless permutation seeded by (seed, e), so a
    run resumed at epoch e sees exactly the batches an uninterrupted run
    would. Batches drop the remainder: every step has the same shape, which
    keeps batch statistics and the neighbourhood block comparable.
    """
    import tensorflow as tf

    n = int(gan_images.shape[0])
    if n < batch_size:
        raise UserError(f"{n} training images is fewer than --batch_size {batch_size}; lower --batch_size")
    images_t = tf.constant(gan_images)
    x_t = tf.constant(encoder_inputs)

    def epoch_indices(e):
        perm = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                        seed=tf.stack([tf.cast(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(perm).batch(batch_size, drop_remainder=True)

    ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_indices)
    ds = ds.map(lambda idx: {"image": tf.gather(images_t, idx), "x": tf.gather(x_t, idx), "index": idx},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def load_training_data(config: "BGANConfig") -> ImageData:
    """The images a training config names (--dataset, --tfds_split, --data_dir, --max_images)."""
    size = None if config.dataset.startswith(("folder:", "npz:")) or os.path.isdir(config.dataset) else None
    return load_images(config.dataset, tfds_split=config.tfds_split, data_dir=config.data_dir,
                       download=config.download, max_images=config.max_images, size=size)


def dataset_paths(spec: str) -> list[str]:
    """Files and folders a --dataset spec (comma-separated parts) reads from."""
    out = []
    for part in (s.strip() for s in spec.split(",")):
        if part.startswith(("folder:", "npz:")):
            out.append(part.split(":", 1)[1])
        elif part and os.path.isdir(part):
            out.append(part)
    return out
