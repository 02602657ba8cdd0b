"""Every knob of a BGAN run in one dataclass, and the loss presets.

Presets (``released_code``, ``paper``, ``nbr_only``) set only the loss and
sign-activation knobs; data, backbone and run settings stay the user's.
Where the 2017 released code and the AAAI paper differ, the presets follow
each (see docs/METHOD.md for the list).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from bgan_tf.errors import UserError


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
    hash_hidden: tuple[int, ...] = ()  # MLP layers between backbone and Dense(L)
    hash_norm: bool = False  # batch-normalise Dense(L) outputs before the sign
    num_bits: int = 32
    # --- neighbourhood graph -----------------------------------------------
    graph_features: str = "backbone"  # backbone | pixels
    k1: int = 20
    k2: int = 30
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
    noise_dim: int = 0  # 0: prior fakes are G(random sign codes); >0 unused
    sync_batch_norm: bool = False
    # --- losses --------------------------------------------------------------
    nbr_form: str = "released"  # released: mean((ZZ^T - S)^2); paper: ((1/L) z.z - s)^2 off-diagonal
    w_nbr: float = 10.0
    w_quant: float = 1.0
    w_pixel: float = 0.0
    w_feature: float = 1.0
    w_adv: float = 1.0
    fake_source: str = "prior"  # codes | prior | both
    adv_to_encoder: bool = False  # let the adversarial gradient reach the encoder (through G(code))
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
    steps_per_epoch: int | None = None  # None: one pass over the data
    save_every_steps: int = 0  # >0: also checkpoint every N steps inside an epoch (resume mid-epoch)

    def validate(self) -> "BGANConfig":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(self.num_bits >= 1, f"--num_bits must be >= 1, got {self.num_bits}")
        need(self.image_size in (32, 64), f"--image_size must be 32 or 64, got {self.image_size}")
        need(self.sign_mode in ("tanh", "app", "ste"), f"--sign_mode must be tanh, app or ste, got {self.sign_mode!r}")
        need(self.ste_surrogate in ("tanh", "app"), f"--ste_surrogate must be tanh or app, got {self.ste_surrogate!r}")
        need(self.nbr_form in ("released", "paper"), f"--nbr_form must be released or paper, got {self.nbr_form!r}")
        need(self.fake_source in ("codes", "prior", "both"), f"--fake_source must be codes, prior or both, got {self.fake_source!r}")
        need(self.graph_features in ("backbone", "pixels"), f"--graph_features must be backbone or pixels, got {self.graph_features!r}")
        need(self.strategy in ("one_device", "mirrored", "multi_worker_mirrored"),
             f"--strategy must be one_device, mirrored or multi_worker_mirrored, got {self.strategy!r}")
        need(self.batch_size >= 2, f"--batch_size must be >= 2 (the neighbourhood loss compares pairs), got {self.batch_size}")
        need(self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}")
        need(self.save_every_steps >= 0, f"--save_every_steps must be >= 0, got {self.save_every_steps}")
        need(self.k1 >= 1 and self.k2 >= 1, "--k1 and --k2 must be >= 1")
        need(len(self.beta_values) >= 1 and all(b > 0 for b in self.beta_values), "--beta_values must be positive numbers")
        need(self.beta_every >= 1, "--beta_every must be >= 1")
        need(len(self.gen_channels) >= 2, "--gen_channels needs at least two widths")
        need(len(self.disc_channels) >= 2, "--disc_channels needs at least two widths")
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BGANConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kw = {}
        for k, v in d.items():
            if k not in fields:
                continue  # tolerate keys from newer versions
            if isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)

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
