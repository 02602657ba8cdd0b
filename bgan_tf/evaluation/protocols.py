"""Seeded query / database / training splits of the common hashing protocols.

Why: numbers are comparable only on the same split; every split here is a pure
function of (labels, seed), so a result can be reproduced from the seed alone. All
splits return index arrays into the ORIGINAL label array (sorted ascending), with
query and database disjoint and the training set drawn FROM the database (the usual
unsupervised-hashing setting: training images are database images, queries are unseen).

Protocols:
- `cifar10_pbgan`: the BGAN paper's split: 60,000 CIFAR-10 images pooled; 1,000
  queries (100 per class); database = the other 59,000; training = 10,000 (1,000 per
  class) from the database. The released evaluation reports mAP@all (`map_at=None`);
  later papers also quote mAP@1000 on this split.
- `cifar10_10k_50k`: the split of many later papers: 10,000 queries (1,000 per class),
  database = the remaining 50,000. Those papers usually TRAIN on the whole database
  (or on 5,000 of it); here training = 5,000 (500 per class) from the database, so an
  unsupervised run costs the same as on other protocols. Metric: mAP@1000.
- `nuswide_21`: NUS-WIDE restricted to its 21 most frequent concepts; only images with
  at least one of them are kept; 2,100 queries (100 per concept), database = the rest,
  training = 10,500 (500 per concept) from the database. Metric: mAP@5000. Relevance
  must use only the 21 concept columns: `Split.label_columns` says which.
- `mirflickr25k`: MIRFlickr-25K with its 24 concepts; images with no label are dropped
  (about 20,015 remain); 2,000 random queries, database = the rest, 5,000 random
  training images from the database. Conventions differ between papers (mAP over the
  whole ranking in much cross-modal work, mAP@5000 or @1000 in some image-hashing
  papers); we recommend mAP@5000, like NUS-WIDE, and `evaluate_codes` also always
  returns mAP@all.

Multi-label per-class sampling (NUS-WIDE): an image with several concepts can fill the
quota of only one concept; concepts are served from the rarest to the most frequent so
that rare ones are not exhausted by earlier draws, and each draw is among images not
already taken. Per-concept counts therefore say "at least 100 queries carry this
concept", and the totals are exact (2,100 / 10,500).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bgan_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class Split:
    """Index arrays into the original data set, and how to score the split.

    map_at: the K of the recommended mAP@K; None means mAP over the whole database.
    label_columns: for multi-label data, the label columns that define relevance
    (None: all columns / single-label).
    """

    name: str
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray
    map_at: int | None
    seed: int
    label_columns: np.ndarray | None = None

    def sizes(self) -> dict[str, int]:
        return {"query": int(self.query.size), "database": int(self.database.size), "train": int(self.train.size)}

    def labels_for_relevance(self, labels: np.ndarray) -> np.ndarray:
        """The labels to hand to the metrics (restricted to `label_columns` if set)."""
        lab = np.asarray(labels)
        return lab if self.label_columns is None else lab[:, self.label_columns]


def _rng(seed: int) -> np.random.Generator:
    if int(seed) != seed:
        raise UserError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_labels(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 1:
        if lab.size and not np.issubdtype(lab.dtype, np.integer):
            raise UserError("single-label protocols need integer class ids [N]")
        return lab
    if lab.ndim == 2:
        if lab.size and not np.all((lab == 0) | (lab == 1)):
            raise UserError("multi-label protocols need a {0,1} label matrix [N, C]")
        return lab.astype(bool)
    raise UserError(f"labels must be class ids [N] or a multi-label matrix [N, C], got shape {lab.shape}")


def _draw_per_class(
    labels: np.ndarray,
    candidates: np.ndarray,
    per_class: int,
    rng: np.random.Generator,
    what: str,
) -> np.ndarray:
    """Draw `per_class` distinct items of each class (or concept) among `candidates`."""
    available = np.zeros(labels.shape[0], dtype=bool)
    available[candidates] = True
    if labels.ndim == 1:
        classes = np.unique(labels)  # a class absent from the candidates is "short" too
        members = [np.flatnonzero(available & (labels == c)) for c in classes]
        names = [str(c) for c in classes]
    else:
        members = [np.flatnonzero(available & labels[:, c]) for c in range(labels.shape[1])]
        names = [str(c) for c in range(labels.shape[1])]
    short = [(nm, m.size) for nm, m in zip(names, members) if m.size < per_class]
    if labels.ndim == 1 and short:
        listed = ", ".join(f"class {nm} has {size}" for nm, size in short[:5])
        raise UserError(f"{what}: need {per_class} per class but {listed}; use a smaller per-class count")
    chosen = []
    if labels.ndim == 1:
        for m in members:
            chosen.append(rng.choice(m, size=per_class, replace=False))
        return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)
    # Multi-label: rarest concept first, each draw among images not yet taken.
    for c in np.argsort([m.size for m in members], kind="stable"):
        pool = np.flatnonzero(available & labels[:, c])
        if pool.size < per_class:
            raise UserError(
                f"{what}: need {per_class} images of concept {names[c]} but only {pool.size} are left "
                "after serving rarer concepts; use a smaller per-concept count"
            )
        pick = rng.choice(pool, size=per_class, replace=False)
        available[pick] = False
        chosen.append(pick)
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def class_balanced_split(
    labels: np.ndarray,
    n_query_per_class: int,
    n_train_per_class: int,
    seed: int,
    *,
    name: str = "class_balanced",
    map_at: int | None = None,
) -> Split:
    """Queries: n_query_per_class per class; database: all the rest; training:
    n_train_per_class per class drawn from the database.

    labels: int class ids [N] or a {0,1} multi-label matrix [N, C] (then "per class"
    means per concept, see the module docstring). Raises UserError when a class has
    too few items. Every multi-label row must carry at least one label (filter first).
    """
    lab = _check_labels(labels)
    if n_query_per_class < 0 or n_train_per_class < 0:
        raise UserError("per-class counts must be >= 0")
    n = lab.shape[0]
    if lab.ndim == 2 and n and not lab.any(axis=1).all():
        raise UserError("some items have no label; keep only labelled items before splitting")
    if lab.ndim == 1:
        classes, counts = np.unique(lab, return_counts=True)
        need = n_query_per_class + n_train_per_class
        short = [(c, k) for c, k in zip(classes, counts) if k < need]
        if short:
            listed = ", ".join(f"class {c} has {k}" for c, k in short[:5])
            raise UserError(
                f"need {need} items per class ({n_query_per_class} query + {n_train_per_class} train) "
                f"but {listed}"
            )
    rng = _rng(seed)
    query = np.sort(_draw_per_class(lab, np.arange(n), n_query_per_class, rng, "queries"))
    database = np.setdiff1d(np.arange(n), query)
    train = np.sort(_draw_per_class(lab, database, n_train_per_class, rng, "training set"))
    return Split(name, query.astype(np.int64), database.astype(np.int64), train.astype(np.int64), map_at, int(seed))


def holdout_split(labels: np.ndarray, per_class: int, seed: int) -> Split:
    """What the train binary holds out: `per_class` class-balanced queries; the rest is
    the database (and what it trains on); no separate training draw."""
    return class_balanced_split(labels, per_class, 0, seed, name="holdout")


def random_split(
    n: int,
    n_query: int,
    n_train: int,
    seed: int,
    *,
    keep: np.ndarray | None = None,
    name: str = "random",
    map_at: int | None = None,
) -> Split:
    """Queries: n_query random items (among `keep`, default all n); database: the rest
    of `keep`; training: n_train random database items."""
    pool = np.arange(n) if keep is None else np.asarray(keep, dtype=np.int64)
    if n_query + n_train > pool.size or n_query >= pool.size:
        raise UserError(
            f"need {n_query} queries and {n_train} training items from a database of the rest, "
            f"but only {pool.size} items are available"
        )
    rng = _rng(seed)
    query = np.sort(rng.choice(pool, size=n_query, replace=False))
    database = np.setdiff1d(pool, query)
    train = np.sort(rng.choice(database, size=n_train, replace=False))
    return Split(name, query, database, train, map_at, int(seed))


def cifar10_pbgan(labels: np.ndarray, seed: int) -> Split:
    """BGAN paper split: 100 queries/class, the rest database, 1,000/class training."""
    lab = _check_labels(labels)
    if lab.ndim != 1:
        raise UserError("CIFAR-10 protocols need class ids [N]")
    return class_balanced_split(lab, 100, 1000, seed, name="cifar10_pbgan", map_at=None)


def cifar10_10k_50k(labels: np.ndarray, seed: int) -> Split:
    """Later papers' split: 1,000 queries/class, 50,000 database, 500/class training."""
    lab = _check_labels(labels)
    if lab.ndim != 1:
        raise UserError("CIFAR-10 protocols need class ids [N]")
    return class_balanced_split(lab, 1000, 500, seed, name="cifar10_10k_50k", map_at=1000)


def top_concepts(labels_multi: np.ndarray, k: int) -> np.ndarray:
    """Column ids of the k most frequent concepts (ties: lower column first), sorted."""
    lab = _check_labels(labels_multi)
    if lab.ndim != 2:
        raise UserError("multi-label protocols need a {0,1} label matrix [N, C]")
    if lab.shape[1] < k:
        raise UserError(f"need at least {k} concept columns, got {lab.shape[1]}")
    freq = lab.sum(axis=0)
    return np.sort(np.argsort(-freq, kind="stable")[:k])


def nuswide_21(labels_multi: np.ndarray, seed: int) -> Split:
    """NUS-WIDE, 21 most frequent concepts: 100 queries and 500 training per concept."""
    lab = _check_labels(labels_multi)
    cols = top_concepts(lab, 21)
    sub = lab[:, cols]
    keep = np.flatnonzero(sub.any(axis=1))
    inner = class_balanced_split(sub[keep], 100, 500, seed, name="nuswide_21", map_at=5000)
    return Split(
        "nuswide_21", keep[inner.query], keep[inner.database], keep[inner.train], 5000, int(seed), cols
    )


def mirflickr25k(labels_multi: np.ndarray, seed: int) -> Split:
    """MIRFlickr-25K: labelled images only; 2,000 random queries, 5,000 training."""
    lab = _check_labels(labels_multi)
    if lab.ndim != 2:
        raise UserError("multi-label protocols need a {0,1} label matrix [N, C]")
    keep = np.flatnonzero(lab.any(axis=1))
    return random_split(lab.shape[0], 2000, 5000, seed, keep=keep, name="mirflickr25k", map_at=5000)


PROTOCOLS = {
    "cifar10_pbgan": cifar10_pbgan,
    "cifar10_10k_50k": cifar10_10k_50k,
    "nuswide_21": nuswide_21,
    "mirflickr25k": mirflickr25k,
}


def make_split(protocol: str, labels: np.ndarray, seed: int) -> Split:
    """Split by protocol name (one of PROTOCOLS)."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol](labels, seed)
