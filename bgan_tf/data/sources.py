"""Dataset sources: ``load_images(spec)`` and the loaders it dispatches to, all returning ``ImageData``.

- ``digits``: scikit-learn's 1,797 labelled 8x8 digits (shipped inside the
  scikit-learn wheel: the offline default), upsampled to 32x32 RGB.
- ``tfds:NAME``: a TFDS dataset, from ``data_dir``; downloads only when
  ``download=True`` (tests never download).
- ``folder:PATH``: an image folder; class subfolders give labels (kept for
  evaluation only), loose files have no label.
- ``npz:PATH``: arrays ``images`` [N,H,W(,C)] and optional ``labels``.

Images are decoded and resized by `bgan_tf.data.images`; in a folder, undecodable files
and images over the pixel budget are skipped with a counted, logged warning.
`load_training_data` reads what a training config names; `dataset_paths` lists the
files and folders a --dataset spec reads from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from bgan_tf.data.images import IMAGE_EXTENSIONS, ImageListing, ImageTooLarge, list_image_files, load_image_file, \
    resize_uint8, to_rgb_uint8
from bgan_tf.errors import UserError

if TYPE_CHECKING:
    from bgan_tf.config import BGANConfig


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


def load_digits(size: int = 32) -> ImageData:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs = (d.images / 16.0 * 255.0).round().astype(np.uint8)  # [N, 8, 8], 0..16 -> 0..255
    out = np.stack([resize_uint8(np.repeat(im[..., None], 3, -1), size) for im in imgs])
    return ImageData(out, d.target.astype(np.int64), [f"digits/{i}" for i in range(len(out))],
                     [str(i) for i in range(10)])


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
    # describe_skips covers what the lister passed over: unsupported extensions,
    # symbolic links it did not follow, folders it could not list.
    listed = listing.describe_skips()
    parts = [listed] if listed else []
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
    if raw.dtype.kind in "fc" and not np.isfinite(raw).all():
        # One NaN made max() NaN, so a [0, 1] set was read as 0..255 (issue 27 case 15).
        bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
        raise UserError(f"{path}: 'images' holds {bad:,} non-finite values (NaN or inf); replace or drop "
                        "those images and save again")
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
