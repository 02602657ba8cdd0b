"""What `evaluate_model` is given: the labelled data, the seeded split and the options.

`load_eval_data` loads one dataset spec or pools several (protocols such as
cifar10_pbgan split train and test images together); `build_split` makes the
protocol's seeded split (`holdout` is exactly what the train binary held out with the
same seed); `parse_map_at` and `parse_baselines` turn the binary's flag values into
checked options. Everything here fails with a one-line UserError before any model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bgan_tf.data.images import resize_uint8
from bgan_tf.data.sources import ImageData, load_images
from bgan_tf.errors import UserError
from bgan_tf.evaluation.protocols import Split, holdout_split, make_split

PROTOCOL_NAMES = ("holdout", "cifar10_pbgan", "cifar10_10k_50k", "nuswide_21", "mirflickr25k")
BASELINE_CHOICES = ("LSH", "PCAH", "ITQ", "float_cosine")
#: mAP@K reported by default per protocol (mAP@all is always reported too).
DEFAULT_MAP_AT: dict[str, tuple[int, ...]] = {
    "holdout": (100,),
    "cifar10_pbgan": (1000,),
    "cifar10_10k_50k": (1000,),
    "nuswide_21": (5000,),
    "mirflickr25k": (5000,),
}


def load_eval_data(specs: str | Sequence[str], *, tfds_split: str = "train", data_dir: str | None = None,
                   max_images: int | None = None) -> ImageData:
    """Load one dataset spec or pool several (comma-separated string or list), in order.

    Why pooling: protocols such as cifar10_pbgan split the train and test images
    together. Labels are matched by class name when the parts name their classes
    (class subfolders), images are resized to the first part's size if they differ.
    `max_images` keeps the first N pooled images (what training's --max_images did).
    """
    parts = [s.strip() for s in (specs.split(",") if isinstance(specs, str) else specs)]
    parts = [s for s in parts if s]
    if not parts:
        raise UserError("--dataset is empty; pass digits, tfds:NAME, folder:PATH or npz:PATH")
    loaded = [load_images(s, tfds_split=tfds_split, data_dir=data_dir, download=False) for s in parts]
    for spec, d in zip(parts, loaded):
        if d.labels is None:
            raise UserError(f"dataset {spec!r} has no labels; evaluation needs labels (class subfolders, "
                            "TFDS labels or an npz 'labels' array)")
    data = loaded[0] if len(loaded) == 1 else _pool(parts, loaded)
    if max_images is not None:
        if max_images < 1:
            raise UserError(f"--max_images must be >= 1, got {max_images}")
        if len(data) > max_images:
            data = data.subset(np.arange(max_images))
    return data


def _pool(specs: list[str], parts: list[ImageData]) -> ImageData:
    first = parts[0]
    hw = first.images.shape[1:3]
    ndims = {d.labels.ndim for d in parts}
    if len(ndims) != 1 or (ndims == {2} and len({d.labels.shape[1] for d in parts}) != 1):
        raise UserError(f"cannot pool {', '.join(specs)}: their labels are of different kinds")
    class_names = first.class_names
    labels = [d.labels for d in parts]
    if ndims == {1} and all(d.class_names for d in parts):
        # Folders number their classes by sorted name: map every part onto one list.
        class_names = sorted({c for d in parts for c in d.class_names})
        lookup = {c: i for i, c in enumerate(class_names)}
        labels = [np.array([lookup[d.class_names[i]] for i in d.labels], np.int64) for d in parts]
    images = []
    for d in parts:
        imgs = d.images
        if imgs.shape[1:3] != hw:
            if hw[0] != hw[1]:
                raise UserError(f"cannot pool {', '.join(specs)}: image sizes {hw} and {imgs.shape[1:3]} differ")
            imgs = np.stack([resize_uint8(im, hw[0]) for im in imgs])
        images.append(imgs)
    names = None if any(d.names is None for d in parts) else [n for d in parts for n in d.names]
    return ImageData(np.concatenate(images), np.concatenate(labels), names, class_names)


def build_split(protocol: str, labels: np.ndarray | None, seed: int, *, holdout_per_class: int = 20) -> Split:
    """The protocol's seeded split. `holdout`: `holdout_per_class` class-balanced
    queries (exactly what the train binary held out with the same seed); the rest is
    both the database and the training set."""
    if labels is None:
        raise UserError("evaluation needs labels (class subfolders, TFDS labels or an npz 'labels' array)")
    if protocol not in PROTOCOL_NAMES:
        raise UserError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOL_NAMES)}")
    if protocol != "holdout":
        return make_split(protocol, labels, seed)
    if holdout_per_class < 1:
        raise UserError(f"--holdout_per_class must be >= 1, got {holdout_per_class}")
    inner = holdout_split(labels, holdout_per_class, seed)
    if inner.database.size == 0:
        raise UserError("the holdout split left no database items; lower --holdout_per_class")
    return Split("holdout", inner.query, inner.database, inner.database, None, inner.seed, inner.label_columns)


def parse_map_at(values: Sequence[Any] | None, protocol: str) -> tuple[int, ...]:
    """--map_at strings -> ints (default: the protocol's K)."""
    if values is None:
        return DEFAULT_MAP_AT.get(protocol, ())
    try:
        ks = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"--map_at: expected comma-separated integers, got {','.join(map(str, values))!r}") from None
    if any(k < 1 for k in ks):
        raise UserError(f"--map_at values must be >= 1, got {list(ks)}")
    return ks


def parse_baselines(values: Sequence[str] | None) -> tuple[str, ...]:
    """Baseline names, case-insensitive -> canonical spelling, duplicates dropped."""
    canon = {b.lower(): b for b in BASELINE_CHOICES}
    out: list[str] = []
    for v in values or ():
        key = str(v).strip().lower()
        if not key:
            continue
        if key not in canon:
            raise UserError(f"unknown baseline {v!r}; choose from {', '.join(BASELINE_CHOICES)}")
        if canon[key] not in out:
            out.append(canon[key])
    return tuple(out)
