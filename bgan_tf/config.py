"""Every knob of a BGAN run in one dataclass, and the loss presets.

Presets (``released_code``, ``paper``, ``nbr_only``) set only the loss and
sign-activation knobs; data, backbone and run settings stay the user's.
Where the 2017 released code and the AAAI paper differ, the presets follow
each (see docs/METHOD.md for the list).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any

from absl import logging

from bgan_tf.errors import UserError


# Bounds of every numeric knob, inclusive. The flags (flags/train_flags.py) use the same
# table, so the library refuses what the command line refuses. Upper bounds keep one
# request from asking for unbounded memory or disk: 1024 bits (the paper uses 12-64)
# keep G's first layer and the hash layer small; 4096 is the largest batch whose
# B x B neighbourhood block stays tens of MB.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "max_images": (1, 100_000_000),
    "image_size": (32, 64),
    "backbone_input_size": (32, 512),
    # >= 2: the closing evaluation scores precision within Hamming radius 2, and one bit
    # (two codes) hashes nothing; refused before anything is written (issue 27 case 16).
    "num_bits": (2, 1024),
    "k1": (1, 1000),
    "k2": (1, 1000),
    "beta_every": (1, 100_000),
    "disc_feature_dim": (1, 4096),
    "batch_size": (2, 4096),  # >= 2: the neighbourhood loss compares pairs
    "epochs": (1, 100_000),
    "seed": (0, 2**31 - 1),
    "num_cpu_devices": (1, 64),
    "sample_every": (1, 100_000),
    "steps_per_epoch": (0, 10_000_000),  # 0 (or None): one pass over the data
    "save_every_steps": (0, 10_000_000),
}
# name -> (fewest, most entries, smallest, largest value)
LIST_INT_LIMITS: dict[str, tuple[int, int, int, int]] = {
    "hash_hidden": (0, 8, 1, 8192),
    "gen_channels": (2, 7, 1, 1024),
    "disc_channels": (2, 8, 1, 1024),
}
# name -> (low, high, low allowed?); every float must also be finite.
FLOAT_LIMITS: dict[str, tuple[float, float, bool]] = {
    "w_nbr": (0.0, 1e6, True),
    "w_quant": (0.0, 1e6, True),
    "w_pixel": (0.0, 1e6, True),
    "w_feature": (0.0, 1e6, True),
    "w_adv": (0.0, 1e6, True),
    "w_consistency": (0.0, 1e6, True),
    "lr_e": (0.0, 10.0, False),
    "lr_g": (0.0, 10.0, False),
    "lr_d": (0.0, 10.0, False),
    "adam_beta_1": (0.0, 0.999999, True),
    "adam_epsilon": (0.0, 1e3, False),
}
BETA_LIMITS = (1, 100, 1e4)  # fewest, most values; largest slope (each > 0)
# Pixels of one training batch at the backbone's input size (an unfrozen backbone sees them
# all every step): 64 x 1024^2, or 4096 x 128^2.
MAX_BATCH_PIXELS = 2**26
# --- neighbourhood graph's kNN (bgan_tf.training.graph) ---------------------------------
# --knn: exact FAISS search (O(N^2 D)), an HNSW graph (approximate; its recall against
# exact search is measured on sampled queries and logged), or auto: exact up to
# EXACT_KNN_MAX_ITEMS training items (whose graphs are the exact ones), approximate above.
KNN_METHODS = ("auto", "exact", "approximate")
# Forms of the neighbourhood term: (inner products scaled by 1/L, diagonal pairs i == j
# included). The released code and the paper differ in both; the two mixed forms exist to
# tell which difference matters (the released-code ablation in benchmarks/cifar10_pbgan.py).
NBR_FORMS = {
    "released": (False, True),
    "paper": (True, False),
    "released_scaled": (True, True),
    "released_off_diagonal": (False, False),
}
EXACT_KNN_MAX_ITEMS = 50_000
# --graph_construction: the K1/K2 overlap graph of the BGAN definition, or diffusion
# (manifold ranking over the K1 kNN graph) picking as many positives per item
# (bgan_tf.training.diffusion). Diffusion costs O(T nnz N): ~50 s for 10,000 images on
# 2 cores, so ~100x that at the limit.
GRAPH_CONSTRUCTIONS = ("k1k2", "diffusion")
DIFFUSION_MAX_ITEMS = 100_000
INT_LIMITS.update(diffusion_steps=(1, 100))
FLOAT_LIMITS.update(diffusion_alpha=(0.0, 0.999, False))


# Knobs of earlier versions whose own measurements recorded no gain (issue 28; docs/experiments.md):
# removed from the product. A config.json that still holds them loads (they are skipped); the
# results measured with them name the commit that had them (benchmarks/results, measured_with_commit).
# name -> the value under which it changed nothing (its old default).
REMOVED_FIELDS: dict[str, Any] = {
    "gan_loss": "bce", "d_label_smoothing": 0.0, "instance_noise": 0.0, "instance_noise_steps": 0, "g_steps": 1,
    "content_warmup_epochs": 0, "content_to_encoder": 1.0, "w_perceptual": 0.0, "graph_model": "",
    "diffusion_pairs_per_item": 0.0, "init_from": "", "lr_backbone": 0.0, "early_stopping_patience": 0,
    "early_stopping_holdout": 0.05, "adv_to_encoder": False, "noise_dim": 0}


# Knobs that size what is allocated when networks are built or batches are made: bounded
# whenever a config is read from a file (BGANConfig.from_dict), not only when training.
SIZE_FIELDS = ("num_bits", "image_size", "backbone_input_size", "hash_hidden", "gen_channels", "disc_channels",
               "disc_feature_dim", "batch_size")


def check_graph_construction(construction: str, num_items: int) -> None:
    """UserError for an unknown construction, or diffusion over more than DIFFUSION_MAX_ITEMS."""
    if construction not in GRAPH_CONSTRUCTIONS:
        raise UserError(f"--graph_construction must be {' or '.join(GRAPH_CONSTRUCTIONS)}, got {construction!r}")
    if construction == "diffusion" and num_items > DIFFUSION_MAX_ITEMS:
        raise UserError(f"--graph_construction diffusion is quadratic in the number of images; {num_items:,} is "
                        f"above its limit of {DIFFUSION_MAX_ITEMS:,}: use k1k2 or lower --max_images")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def check_value(name: str, value: Any) -> None:
    """UserError if ``value`` is out of bounds for the numeric knob ``name`` (others pass)."""
    if name in INT_LIMITS:
        lo, hi = INT_LIMITS[name]
        if value is None and name in ("max_images", "steps_per_epoch"):
            return
        if not _is_int(value) or not lo <= value <= hi:
            raise UserError(f"--{name} must be an integer from {lo} to {hi}, got {value!r}")
    elif name in LIST_INT_LIMITS:
        fewest, most, lo, hi = LIST_INT_LIMITS[name]
        values = tuple(value) if isinstance(value, (list, tuple)) else None
        if values is None or not fewest <= len(values) <= most or \
                not all(_is_int(v) and lo <= v <= hi for v in values):
            raise UserError(f"--{name} must be {fewest} to {most} comma-separated integers from {lo} to {hi}, "
                            f"got {value!r}")
    elif name in FLOAT_LIMITS:
        lo, hi, lo_ok = FLOAT_LIMITS[name]
        if not _is_float(value) or not (lo <= value if lo_ok else lo < value) or value > hi:
            low = f">= {lo}" if lo_ok else f"> {lo}"
            raise UserError(f"--{name} must be a number {low} and <= {hi}, got {value!r}")
    elif name == "beta_values":
        fewest, most, hi = BETA_LIMITS
        values = tuple(value) if isinstance(value, (list, tuple)) else None
        if values is None or not fewest <= len(values) <= most or \
                not all(_is_float(v) and 0 < v <= hi for v in values):
            raise UserError(f"--beta_values must be {fewest} to {most} comma-separated numbers > 0 and <= {hi}, "
                            f"got {value!r}")


@dataclasses.dataclass
class BGANConfig:
    # --- data -------------------------------------------------------------
    dataset: str = "digits"  # digits | tfds:NAME | folder:PATH | npz:PATH
    tfds_split: str = "train"
    data_dir: str | None = None  # TFDS data_dir
    download: bool = False  # TFDS only; tests never download
    max_images: int | None = None  # at most N: a seeded sample of a folder's files, else the first N
    image_size: int = 32  # what G generates and D judges: 32 or 64
    # --- backbone / encoder ------------------------------------------------
    backbone: str = "small_cnn"  # small_cnn | mobilenet_v2_torch | keras.applications name
    backbone_weights: str | None = None  # "imagenet", a weights-file path, or None
    backbone_input_size: int = 32
    freeze_backbone: bool = False  # True: features computed once and cached
    feature_cache_dir: str | None = None  # default: ~/.cache/bgan_tf/features
    # Partial fine-tuning (with freeze_backbone): the backbone from this layer on trains on
    # cached activations of the layers below it; top_bn: its BatchNorms frozen or trained.
    trainable_from: str = ""
    top_bn: str = "frozen"  # frozen | train
    # Each training image seen as itself or its mirror (a seeded coin per image and pass);
    # with cached inputs, the mirrors' features / bottom activations are cached too.
    flip_augment: bool = False
    # Weight of mean((z(x) - z(mirror x))^2): an image's and its mirror's codes agree (both
    # views go through the encoder each step, so it costs a second encoder pass).
    w_consistency: float = 0.0
    hash_hidden: tuple[int, ...] = ()  # MLP layers between backbone and Dense(L)
    hash_norm: bool = False  # batch-normalise Dense(L) outputs before the sign
    num_bits: int = 32
    # --- neighbourhood graph -----------------------------------------------
    graph_features: str = "backbone"  # backbone | pixels
    k1: int = 20
    k2: int = 30
    knn: str = "auto"  # auto | exact | approximate (KNN_METHODS)
    graph_construction: str = "k1k2"  # GRAPH_CONSTRUCTIONS
    diffusion_alpha: float = 0.99  # diffusion: weight of longer walks (graph_quality.md measured 0.9, 0.99)
    diffusion_steps: int = 20  # diffusion: terms T of the truncated series
    # --- sign activation ---------------------------------------------------
    sign_mode: str = "tanh"  # tanh | app | ste
    ste_surrogate: str = "tanh"
    beta_values: tuple[float, ...] = (1.0,)  # continuation: beta_values[i] from epoch i*beta_every
    beta_every: int = 8
    # --- generator / discriminator ----------------------------------------
    use_gan: bool = True  # False: encoder + neighbourhood/quantization terms only
    gen_channels: tuple[int, ...] = (256, 256, 128)  # 4x4->...; last sets the pre-RGB width
    disc_channels: tuple[int, ...] = (32, 128, 256, 256)
    disc_feature_dim: int = 1024  # phi(x), used by the content loss
    sync_batch_norm: bool = False
    # --- losses --------------------------------------------------------------
    nbr_form: str = "released"  # NBR_FORMS: released mean((ZZ^T - S)^2); paper ((1/L) z.z - s)^2 off-diagonal
    w_nbr: float = 10.0
    w_quant: float = 1.0
    w_pixel: float = 0.0
    w_feature: float = 1.0
    w_adv: float = 1.0
    fake_source: str = "prior"  # codes | prior | both
    disc_spectral_norm: bool = False  # SpectralNormalization on D's convs and dense layers, D's batch norm off
    # --- optimisation ------------------------------------------------------
    batch_size: int = 40
    epochs: int = 30
    lr_e: float = 1e-3
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    adam_beta_1: float = 0.9
    adam_epsilon: float = 1.0  # the released code's value
    mixed_precision: bool = False
    # --- run -----------------------------------------------------------------
    output_dir: str = "runs/digits"
    seed: int = 0
    strategy: str = "one_device"  # one_device | mirrored | multi_worker_mirrored
    num_cpu_devices: int = 1  # logical CPU devices to create (for mirrored on CPU)
    sample_every: int = 1  # epochs between reconstruction grids
    steps_per_epoch: int | None = None  # None or 0: one pass over the data
    save_every_steps: int = 0  # >0: also checkpoint every N steps inside an epoch (resume mid-epoch)

    def validate(self) -> "BGANConfig":
        """Raise UserError naming the first bad knob (the flags refuse the same values)."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        for f in dataclasses.fields(self):
            check_value(f.name, getattr(self, f.name))
        need(self.image_size in (32, 64), f"--image_size must be 32 or 64, got {self.image_size}")
        need(self.sign_mode in ("tanh", "app", "ste"), f"--sign_mode must be tanh, app or ste, got {self.sign_mode!r}")
        need(self.ste_surrogate in ("tanh", "app"), f"--ste_surrogate must be tanh or app, got {self.ste_surrogate!r}")
        need(self.nbr_form in NBR_FORMS, f"--nbr_form must be one of {', '.join(NBR_FORMS)}, got {self.nbr_form!r}")
        need(self.fake_source in ("codes", "prior", "both"), f"--fake_source must be codes, prior or both, got {self.fake_source!r}")
        need(self.graph_features in ("backbone", "pixels"), f"--graph_features must be backbone or pixels, got {self.graph_features!r}")
        need(self.knn in KNN_METHODS, f"--knn must be {', '.join(KNN_METHODS[:-1])} or {KNN_METHODS[-1]}, "
             f"got {self.knn!r}")
        check_graph_construction(self.graph_construction, 0)
        need(self.strategy in ("one_device", "mirrored", "multi_worker_mirrored"),
             f"--strategy must be one_device, mirrored or multi_worker_mirrored, got {self.strategy!r}")
        ups = len(self.gen_channels) - 1  # each later width doubles the resolution from 4x4-ish up
        need(self.image_size % 2 ** ups == 0 and self.image_size // 2 ** ups >= 1,
             f"--gen_channels: {len(self.gen_channels)} widths cannot make {self.image_size}x{self.image_size} "
             f"images (each width after the first doubles the size); give at most "
             f"{self.image_size.bit_length()} widths")
        need(self.top_bn in ("frozen", "train"), f"--top_bn must be frozen or train, got {self.top_bn!r}")
        if self.trainable_from:
            need(isinstance(self.trainable_from, str) and len(self.trainable_from) <= 200,
                 f"--trainable_from must be a layer name, got {self.trainable_from!r}")
            need(self.freeze_backbone, "--trainable_from trains the backbone's top on cached activations of its "
                 "frozen bottom: it needs --freeze_backbone (not --nofreeze_backbone)")
            need(bool(self.backbone_weights), "--trainable_from fine-tunes a pretrained backbone: pass "
                 "--backbone_weights (imagenet or a .weights.h5 file)")
        if not self.freeze_backbone:
            # The encoder sees every training batch at the backbone's input size.
            pixels = self.batch_size * self.backbone_input_size ** 2
            need(pixels <= MAX_BATCH_PIXELS,
                 f"--batch_size {self.batch_size} at --backbone_input_size {self.backbone_input_size} is "
                 f"{pixels:,} pixels per step (limit {MAX_BATCH_PIXELS:,}); lower one of them")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BGANConfig":
        """A config.json's config; ValueError for an integer SIZE_FIELDS knob out of bounds (issue 27
        case 8: backbone_input_size 20000 crashed build_encoder); wrong types are the reader's to name."""
        fields = {f.name for f in dataclasses.fields(cls)}  # keys from newer versions are skipped
        removed = sorted(set(d) & REMOVED_FIELDS.keys())
        if removed:  # a folder written before issue 28: those knobs no longer change anything
            logging.debug("config: ignoring knobs removed in issue 28: %s", ", ".join(removed))
        config = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})
        for name in SIZE_FIELDS:
            value = getattr(config, name)
            if not all(_is_int(v) for v in (value if isinstance(value, tuple) else (value,))):
                continue
            try:
                check_value(name, value)
            except UserError as e:
                raise ValueError(str(e)) from None
        return config

    def replace(self, **changes: Any) -> "BGANConfig":
        return dataclasses.replace(self, **changes)


# Loss / sign presets. Weights follow the released code unless said otherwise.
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    # The authors' 2017 TensorFlow code: neighbourhood term without 1/L on the
    # whole batch block (diagonal included), content = D-feature distance only,
    # D's fakes from G(prior), tanh sign with the slope schedule of the code's
    # history (1 -> 10 every 8 epochs), Adam epsilon 1.0.
    "released_code": dict(
        nbr_form="released", w_nbr=10.0, w_quant=1.0, w_pixel=0.0, w_feature=1.0,
        w_adv=1.0, fake_source="prior", sign_mode="tanh",
        beta_values=(1.0, 2.5, 5.0, 7.5, 10.0), beta_every=8, adam_epsilon=1.0, use_gan=True,
    ),
    # The paper: ((1/L) z_i.z_j - s_ij)^2 over off-diagonal pairs, content =
    # pixel MSE + D-feature distance, fakes generated from the image's binary
    # code, piecewise-linear "app" sign with continuation.
    "paper": dict(
        nbr_form="paper", w_nbr=10.0, w_quant=1.0, w_pixel=1.0, w_feature=1.0,
        w_adv=1.0, fake_source="codes", sign_mode="app",
        beta_values=(1.0, 2.5, 5.0, 7.5, 10.0), beta_every=8, adam_epsilon=1e-7, use_gan=True,
    ),
    # Ablation: the same encoder head trained with the neighbourhood and
    # quantization terms alone (no generator, no discriminator).
    "nbr_only": dict(
        nbr_form="paper", w_nbr=10.0, w_quant=1.0, w_pixel=0.0, w_feature=0.0,
        w_adv=0.0, sign_mode="app", beta_values=(1.0, 2.5, 5.0, 7.5, 10.0), beta_every=8,
        adam_epsilon=1e-7, use_gan=False,
    ),
}


def apply_preset(config: BGANConfig, preset: str | None) -> BGANConfig:
    """Return ``config`` with the named loss preset's knobs set."""
    if not preset:
        return config
    if preset not in LOSS_PRESETS:
        raise UserError(f"unknown --preset {preset!r}; choose one of {sorted(LOSS_PRESETS)}")
    return config.replace(**LOSS_PRESETS[preset])
