"""The one place that turns a `BGANConfig` into networks.

Training, loading a trained model folder, cached features and evaluation all build
their backbone spec, encoder, generator and discriminator here, so a new config knob
that changes a network is wired in once.
"""

from __future__ import annotations

import os

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.modeling.backbones import BackboneSpec

_FROM_CONFIG = object()  # sentinel: take the weights named in the config


def backbone_spec(config: BGANConfig, weights: str | None | object = _FROM_CONFIG) -> BackboneSpec:
    """The config's backbone; ``weights=None`` for the architecture only (weights come
    from a trained model's file), or another weights file/name to override the config's."""
    w = config.backbone_weights if weights is _FROM_CONFIG else weights
    if w and w != "imagenet" and not os.path.isfile(w):
        raise UserError(f"backbone weights file {w!r} not found (a relative path is relative to the folder "
                        "the command runs in); pass --backbone_weights with an existing file")
    return BackboneSpec(config.backbone, w, config.backbone_input_size)


def build_encoder(config: BGANConfig, weights: str | None | object = _FROM_CONFIG):
    """The config's Encoder (preprocess + backbone + hash head + sign), not yet built."""
    from bgan_tf.modeling.networks import Encoder

    return Encoder(backbone_spec(config, weights), config.num_bits, config.hash_hidden, config.sign_mode,
                   config.ste_surrogate, config.beta_values[0], freeze_backbone=config.freeze_backbone,
                   hash_norm=config.hash_norm, trainable_from=config.trainable_from, top_bn=config.top_bn)


def build_generator(config: BGANConfig):
    """G: code -> image at ``config.image_size``."""
    from bgan_tf.modeling.networks import Generator

    return Generator(config.image_size, config.gen_channels, config.sync_batch_norm)


def build_discriminator(config: BGANConfig):
    """D: image -> (real/fake logit, phi features)."""
    from bgan_tf.modeling.networks import Discriminator

    return Discriminator(config.disc_channels, config.disc_feature_dim, config.sync_batch_norm,
                         spectral_norm=config.disc_spectral_norm)
