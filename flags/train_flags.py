"""Flags of ``python -m bgan_tf.train`` (and the training part of other binaries).

Precedence: the named ``--config`` (a preset under bgan_tf/configs) gives the
defaults, ``--preset`` then sets the loss knobs, and every flag given on the
command line wins over both.

Every numeric flag is bounded at parse time by the limits in bgan_tf/config.py
(INT_LIMITS, FLOAT_LIMITS, ...), the same ones ``BGANConfig.validate`` applies, so
``--num_bits 100000`` is one error line before TensorFlow starts. The flags train
shares with other binaries (``--dataset``, ``--seed``, ``--batch_size``, ...) are
defined in flags/common.py; not given, they keep the config's value.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from bgan_tf.config import (DIFFUSION_MAX_ITEMS, EXACT_KNN_MAX_ITEMS, GRAPH_CONSTRUCTIONS, INT_LIMITS, KNN_METHODS,
                            LOSS_PRESETS, NBR_FORMS, BGANConfig, apply_preset, check_value)
from bgan_tf.configs import NAMES as CONFIG_NAMES
from bgan_tf.errors import UserError
from flags import common

FLAGS = flags.FLAGS
_D = BGANConfig()

# The BGANConfig fields whose flags other binaries share (defined in flags/common.py).
_SHARED_CONFIG_FLAGS = ("dataset", "tfds_split", "data_dir", "max_images", "batch_size", "seed")
# flag name -> (kind, help) of train's own config flags; defaults come from BGANConfig so
# they exist once.
_TRAIN_FLAGS: dict[str, tuple[str, str]] = {
    "download": ("bool", "Let TFDS download the dataset (needs network; off by default)."),
    "image_size": ("integer", "Resolution the generator makes and the discriminator judges: 32 or 64."),
    "backbone": ("string", "Encoder backbone: small_cnn (from scratch), mobilenet_v2_torch, or a keras.applications name."),
    "backbone_weights": ("string", "Backbone weights: imagenet (downloads when online) or a .weights.h5 path."),
    "backbone_input_size": ("integer", "Square input size the backbone sees (images are resized in the graph)."),
    "freeze_backbone": ("bool", "Keep the backbone fixed; its features are computed once and cached."),
    "feature_cache_dir": ("string", "Where cached backbone features live (default ~/.cache/bgan_tf/features)."),
    "trainable_from": ("string", "With --freeze_backbone: train the backbone from this layer on (e.g. block_13_expand "
                       "of MobileNetV2) on cached activations of the layers below it; empty: all frozen."),
    "top_bn": ("string", "BatchNorm layers of the --trainable_from top: frozen (inference mode, fixed statistics) "
               "or train (batch statistics)."),
    "flip_augment": ("bool", "Show each training image as itself or its horizontal mirror (a seeded coin per image "
                     "and epoch); with cached inputs the mirrors' features or bottom activations are cached too."),
    "w_consistency": ("float", "Weight of mean((z(x) - z(mirror x))^2), which makes an image's and its mirror's "
                      "codes agree (a second encoder pass a step; the mirrors' cached inputs as for --flip_augment)."),
    "hash_hidden": ("list_int", "Widths of MLP layers between the backbone and the Dense(num_bits) hash layer."),
    "hash_norm": ("bool", "Batch-normalise the hash layer's outputs before the sign (keeps them where the surrogate has a gradient)."),
    "num_bits": ("integer", "Code length L in bits."),
    "graph_features": ("string", "Features for the neighbourhood graph: backbone (pretrained) or pixels."),
    "k1": ("integer", "Nearest neighbours per image in the neighbourhood graph (K1)."),
    "k2": ("integer", "Images with the largest neighbour overlap whose neighbours become positives (K2)."),
    "knn": ("enum", f"Neighbour search for the graph: {', '.join(KNN_METHODS)}. auto is exact up to "
                    f"{EXACT_KNN_MAX_ITEMS:,} images and a FAISS HNSW graph above (its recall is logged)."),
    "graph_construction": ("enum", "Positives of the graph: k1k2 (the BGAN definition) or diffusion (as many per "
                           "image, ranked by manifold ranking over the K1 kNN graph: more of them share a class; "
                           f"quadratic cost, at most {DIFFUSION_MAX_ITEMS:,} images)."),
    "diffusion_alpha": ("float", "Diffusion: weight of longer walks, in (0, 0.999]."),
    "diffusion_steps": ("integer", "Diffusion: terms of the truncated series."),
    "sign_mode": ("string", "Sign relaxation during training: tanh, app (clip) or ste (straight-through)."),
    "ste_surrogate": ("string", "Surrogate whose gradient the straight-through estimator uses: tanh or app."),
    "beta_values": ("list_float", "Sign slopes of the continuation schedule, e.g. 1,2.5,5,7.5,10."),
    "beta_every": ("integer", "Epochs between steps of the beta schedule."),
    "use_gan": ("bool", "Train generator and discriminator (off: neighbourhood and quantization terms only)."),
    "gen_channels": ("list_int", "Generator widths, first at the smallest resolution; each later one doubles it."),
    "disc_channels": ("list_int", "Discriminator conv widths (5x5; first stride 1, then stride 2)."),
    "disc_feature_dim": ("integer", "Width of the discriminator feature layer phi used by the content loss."),
    "sync_batch_norm": ("bool", "Synchronise batch-norm statistics across replicas (multi-GPU)."),
    "nbr_form": ("enum", "Neighbourhood loss: released (mean((ZZ^T-S)^2)), paper (((1/L)z.z-s)^2 off-diagonal), "
                 "released_scaled (released with 1/L) or released_off_diagonal (released without i == j)."),
    "w_nbr": ("float", "Weight of the neighbourhood-structure loss."),
    "w_quant": ("float", "Weight of the quantization loss mean((z - sgn z)^2)."),
    "w_pixel": ("float", "Weight of the pixel MSE content loss."),
    "w_feature": ("float", "Weight of the discriminator-feature content loss."),
    "w_adv": ("float", "Weight of the adversarial loss on the encoder and generator."),
    "fake_source": ("string", "What the discriminator sees as fake: codes (G of the image's code), prior (G of noise) or both."),
    "disc_spectral_norm": ("bool", "Spectral normalisation on the discriminator's layers (its batch norm off)."),
    "epochs": ("integer", "Epochs to train; rerunning with more epochs continues the run."),
    "lr_e": ("float", "Adam learning rate of the encoder."),
    "lr_g": ("float", "Adam learning rate of the generator."),
    "lr_d": ("float", "Adam learning rate of the discriminator."),
    "adam_beta_1": ("float", "Adam beta_1 for all three networks."),
    "adam_epsilon": ("float", "Adam epsilon (the released code used 1.0)."),
    "mixed_precision": ("bool", "Compute in float16 with float32 variables (GPUs; slow on CPU)."),
    "output_dir": ("string", "Run folder: checkpoints, logs, samples and the final model; reruns resume here."),
    "strategy": ("string", "tf.distribute strategy: one_device, mirrored or multi_worker_mirrored (TF_CONFIG)."),
    "num_cpu_devices": ("integer", "Split the CPU into this many logical devices (to run mirrored without GPUs)."),
    "sample_every": ("integer", "Epochs between reconstruction sample grids."),
    "steps_per_epoch": ("integer", "Steps per epoch (0 or unset: one pass over the data)."),
    "save_every_steps": ("integer", "Also checkpoint every N steps inside an epoch, so a killed run resumes mid-epoch (0: epoch ends only)."),
}

# Allowed values of the "enum" flags, from their owners.
_ENUM_VALUES: dict[str, tuple[str, ...]] = {"knn": KNN_METHODS, "nbr_form": tuple(NBR_FORMS),
                                          "graph_construction": GRAPH_CONSTRUCTIONS}


def _validator(name: str, parse):
    """An absl checker that gives BGANConfig's own message for a bad value."""

    def check(value) -> bool:
        if value is None:
            return True
        try:
            check_value(name, parse(value))
        except ValueError:
            raise flags.ValidationError(f"--{name}: expected comma-separated numbers, got "
                                        f"{','.join(map(str, value))!r}") from None
        except UserError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    return check


def _define(name: str, kind: str, help_text: str, fv: flags.FlagValues) -> None:
    """One flag, bounded at parse time by the limits BGANConfig.validate applies."""
    default = getattr(_D, name)
    if kind == "string":
        flags.DEFINE_string(name, default, help_text, flag_values=fv)
    elif kind == "enum":
        flags.DEFINE_enum(name, default, _ENUM_VALUES[name], help_text, flag_values=fv)
    elif kind == "bool":
        flags.DEFINE_bool(name, default, help_text, flag_values=fv)
    elif kind == "integer":
        lo, hi = INT_LIMITS[name]
        flags.DEFINE_integer(name, default, help_text, lower_bound=lo, upper_bound=hi, flag_values=fv)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_text, flag_values=fv)
        flags.register_validator(name, _validator(name, float), flag_values=fv)
    elif kind in ("list_int", "list_float"):
        flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=fv)
        flags.register_validator(name, _validator(name, lambda v, k=kind: _parse(k, v)), flag_values=fv)
    else:
        raise ValueError(kind)


def define_train_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Define every training flag plus --config, --preset and evaluation switches.

    Called by the binary before parsing; a second call is a no-op.
    """
    fv = flag_values
    if "num_bits" in fv:
        return
    common.define_shared(*_SHARED_CONFIG_FLAGS, "holdout_per_class", flag_values=fv)
    for name in _SHARED_CONFIG_FLAGS:
        if name in INT_LIMITS:  # train takes what BGANConfig takes (--batch_size: at least 2)
            flags.register_validator(name, _validator(name, int), flag_values=fv)
    flags.DEFINE_string("config", "digits", "Named config under bgan_tf/configs giving the defaults: "
                        f"{' or '.join(CONFIG_NAMES)}, or NAME:VARIANT (cifar10:finetune).", flag_values=fv)
    flags.DEFINE_string("preset", None, f"Loss preset applied on top: {', '.join(LOSS_PRESETS)}.", flag_values=fv)
    flags.DEFINE_bool("evaluate", True, "After training, print mAP of BGAN and ITQ on the held-out queries.",
                      flag_values=fv)
    flags.DEFINE_bool("verbose", False, "Keras' progress bar even off a terminal (else one line per epoch there), "
                      "and the FAISS loader's and TensorFlow saver's INFO lines.", flag_values=fv)
    for name, (kind, help_text) in _TRAIN_FLAGS.items():
        _define(name, kind, help_text, fv)
    flags.register_validator("image_size", lambda v: v in (32, 64), "--image_size must be 32 or 64", flag_values=fv)


def _parse(kind: str, value):
    if kind == "list_int":
        return tuple(int(v) for v in value)
    if kind == "list_float":
        return tuple(float(v) for v in value)
    return value


def config_from_flags() -> BGANConfig:
    """Named config -> preset -> explicitly given flags."""
    from bgan_tf.configs import get_config

    config = apply_preset(get_config(FLAGS.config), FLAGS.preset)
    changes = {}
    kinds = {**{name: "shared" for name in _SHARED_CONFIG_FLAGS}, **{n: k for n, (k, _) in _TRAIN_FLAGS.items()}}
    for name, kind in kinds.items():
        if FLAGS[name].present:
            try:
                changes[name] = _parse(kind, FLAGS[name].value)
            except ValueError:
                raise UserError(f"--{name}: expected comma-separated numbers, got {FLAGS[name].value!r}") from None
    known = {f.name for f in dataclasses.fields(BGANConfig)}
    assert set(changes) <= known
    return config.replace(**changes).validate()
