"""Classical unsupervised hashing baselines: LSH, PCAH, ITQ.

Why: hashing deep features with a classical method is a strong baseline (see the
method notes: ITQ on frozen features is within reach of published deep hashing), so a
BGAN result means something only next to these, fitted on the same training features
and evaluated on the same split.

All three centre features with the training mean, project to L dimensions and take
the sign (>= 0 -> +1, so a code is never 0):
- LSH: random Gaussian projection (Charikar 2002 style sign random projections), seeded.
- PCAH: the top-L principal directions of the training features.
- ITQ (Gong & Lazebnik, CVPR 2011): PCA to L dimensions, then an orthogonal rotation R
  that minimises the quantization error ||B - V R||_F, alternating B = sign(V R) and
  the orthogonal Procrustes solution for R (50 iterations), from a seeded random
  orthogonal start.
Each class has `fit(train_features) -> self`, `project(features) -> float32 [N, L]`
(the continuous codes before the sign) and `encode(features) -> {-1,+1} float32`.
"""

from __future__ import annotations

import numpy as np

from bgan_tf.errors import UserError

BASELINE_NAMES: tuple[str, ...] = ("LSH", "PCAH", "ITQ")


def _features(x: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise UserError(f"{what} must be a 2-D array [N, D], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise UserError(f"{what} have {arr.shape[1]} dimensions but the baseline was fitted on {dim}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{what} contain NaN or infinite values")
    return arr.astype(np.float64, copy=False)


def _signs(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, 1.0, -1.0).astype(np.float32)


def _check_bits(num_bits: int) -> int:
    if int(num_bits) != num_bits or num_bits < 1:
        raise UserError(f"num_bits must be a positive integer, got {num_bits}")
    return int(num_bits)


def _pca(x: np.ndarray, num_bits: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], top-num_bits principal directions [D, L]) with a fixed sign per direction."""
    n, d = x.shape
    if num_bits > d:
        raise UserError(
            f"{name} keeps {num_bits} principal directions but the features have only {d} dimensions; "
            f"use num_bits <= {d} (or LSH, which has no such limit)"
        )
    if n < 2:
        raise UserError(f"{name} needs at least 2 training features, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    if n < d:
        # Fewer items than dimensions (e.g. raw pixels): eigendecompose the n x n
        # Gram matrix instead of the d x d covariance (measured 1.9 s vs 12 s for
        # 1,797 x 3,072 digits; numpy's SVD was as slow as the covariance path).
        # Principal directions are X^T u / ||X^T u|| for the top eigenvectors u.
        xc64 = xc.astype(np.float64)
        vals, vecs = np.linalg.eigh(xc64 @ xc64.T)
        u = vecs[:, np.argsort(vals)[::-1][:num_bits]]
        top = xc64.T @ u
        top /= np.maximum(np.linalg.norm(top, axis=0, keepdims=True), 1e-12)
    else:
        cov = xc.T @ xc / (n - 1)
        vals, vecs = np.linalg.eigh(cov)  # ascending
        top = vecs[:, np.argsort(vals)[::-1][:num_bits]]
    # eigh's sign per direction is arbitrary: make the largest |entry| positive so
    # codes do not flip between numpy builds.
    pivot = top[np.argmax(np.abs(top), axis=0), np.arange(num_bits)]
    return mean, top * np.where(pivot < 0, -1.0, 1.0)


class Baseline:
    """Common interface: fit on training features, then project / encode any features."""

    name = ""

    def __init__(self, num_bits: int, seed: int = 0) -> None:
        self.num_bits = _check_bits(num_bits)
        self.seed = int(seed)
        self.mean_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None  # [D, L]

    def fit(self, train_features: np.ndarray) -> Baseline:
        raise NotImplementedError

    def project(self, features: np.ndarray) -> np.ndarray:
        """Continuous codes [N, L] (float32): centred features times the projection."""
        if self.projection_ is None or self.mean_ is None:
            raise UserError(f"{self.name}: call fit(train_features) before project/encode")
        x = _features(features, "features", self.mean_.shape[0])
        return ((x - self.mean_) @ self.projection_).astype(np.float32)

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Binary codes [N, L] in {-1, +1} float32 (never 0)."""
        return _signs(self.project(features))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bits={self.num_bits}, seed={self.seed})"


class LSH(Baseline):
    """Signs of random Gaussian projections of centred features (data-independent)."""

    name = "LSH"

    def fit(self, train_features: np.ndarray) -> LSH:
        x = _features(train_features, "training features")
        if x.shape[0] < 1:
            raise UserError("LSH needs at least 1 training feature (for the mean)")
        rng = np.random.default_rng(self.seed)
        self.mean_ = x.mean(axis=0)
        self.projection_ = rng.standard_normal((x.shape[1], self.num_bits))
        return self


class PCAH(Baseline):
    """Signs of the top-L principal components (deterministic; seed unused)."""

    name = "PCAH"

    def fit(self, train_features: np.ndarray) -> PCAH:
        x = _features(train_features, "training features")
        self.mean_, self.projection_ = _pca(x, self.num_bits, self.name)
        return self


class ITQ(Baseline):
    """PCA to L dimensions, then the rotation minimising the quantization error."""

    name = "ITQ"

    def __init__(self, num_bits: int, seed: int = 0, n_iter: int = 50) -> None:
        super().__init__(num_bits, seed)
        if n_iter < 0:
            raise UserError(f"ITQ n_iter must be >= 0, got {n_iter}")
        self.n_iter = int(n_iter)
        self.pca_: np.ndarray | None = None
        self.rotation_: np.ndarray | None = None
        self.quantization_errors_: list[float] = []

    def fit(self, train_features: np.ndarray) -> ITQ:
        x = _features(train_features, "training features")
        self.mean_, self.pca_ = _pca(x, self.num_bits, self.name)
        v = (x - self.mean_) @ self.pca_
        rng = np.random.default_rng(self.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.num_bits, self.num_bits)))
        self.quantization_errors_ = []
        for _ in range(self.n_iter):
            b = np.where(v @ r >= 0, 1.0, -1.0)
            self.quantization_errors_.append(float(np.mean((b - v @ r) ** 2)))
            # Orthogonal Procrustes: argmin_R ||B - V R||_F over orthogonal R is
            # U W^T for V^T B = U S W^T.
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
        self.rotation_ = r
        self.projection_ = self.pca_ @ r
        return self

    def __repr__(self) -> str:
        return f"ITQ(num_bits={self.num_bits}, seed={self.seed}, n_iter={self.n_iter})"


def make_baseline(name: str, num_bits: int, seed: int = 0) -> Baseline:
    """Baseline by name (`LSH`, `PCAH`, `ITQ`; case-insensitive), not yet fitted."""
    classes = {"LSH": LSH, "PCAH": PCAH, "ITQ": ITQ}
    key = str(name).upper()
    if key not in classes:
        raise UserError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINE_NAMES)}")
    return classes[key](num_bits, seed=seed)


def quantization_error(baseline: Baseline, features: np.ndarray) -> float:
    """Mean squared distance between the continuous codes and their signs.

    Why: ITQ's objective; lower means the sign loses less of the projected geometry.
    Only comparable between baselines whose projections have the same scale (PCAH vs
    ITQ: ITQ's rotation preserves norms).
    """
    v = baseline.project(features).astype(np.float64)
    return float(np.mean((np.where(v >= 0, 1.0, -1.0) - v) ** 2))
