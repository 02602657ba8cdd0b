"""Load a trained model folder and turn images into codes."""

from __future__ import annotations

import json
import os

import numpy as np

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError


class LoadedEncoder:
    """A trained encoder: ``encode(uint8 images [N,H,W,3]) -> signs {-1,+1} [N,L]``.

    Images of any size are resized and normalised inside the model, exactly as
    in training.
    """

    def __init__(self, model, config: BGANConfig, metadata: dict, model_dir: str):
        import tensorflow as tf

        self.model = model
        # Graph functions: eager Keras calls were measured 2-4x slower on CPU.
        self._encode = tf.function(lambda v: model(v, training=False), reduce_retracing=True)
        self._encode_features = tf.function(lambda v: model.encode_features(v, training=False),
                                            reduce_retracing=True)
        self.config = config
        self.metadata = metadata
        self.model_dir = model_dir

    @property
    def num_bits(self) -> int:
        return int(self.config.num_bits)

    @property
    def model_id(self) -> str:
        return str(self.metadata.get("model_id", ""))

    def encode(self, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
        import tensorflow as tf

        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise UserError(f"encode expects uint8 images [N,H,W,3], got shape {arr.shape}")
        if arr.shape[0] == 0:
            return np.zeros((0, self.num_bits), np.float32)
        out = []
        for s in range(0, arr.shape[0], batch_size):
            batch = tf.constant(arr[s:s + batch_size].astype(np.float32))
            out.append(np.asarray(self._encode(batch)))
        return np.concatenate(out).astype(np.float32)

    def encode_features(self, features: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Codes from precomputed backbone features (the frozen-backbone fast path)."""
        import tensorflow as tf

        out = [np.asarray(self._encode_features(tf.constant(features[s:s + batch_size])))
               for s in range(0, len(features), batch_size)]
        return np.concatenate(out).astype(np.float32)


def read_model_files(model_dir: str) -> tuple[BGANConfig, dict]:
    for name in ("config.json", "metadata.json", "encoder.weights.h5"):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise UserError(f"{model_dir} is not a trained bgan_tf model (missing {name}); "
                            "pass the 'model' folder that training wrote")
    with open(os.path.join(model_dir, "config.json")) as f:
        config = BGANConfig.from_dict(json.load(f))
    with open(os.path.join(model_dir, "metadata.json")) as f:
        metadata = json.load(f)
    return config, metadata


def build_encoder(config: BGANConfig):
    """An unweighted encoder with the architecture of ``config`` (weights random)."""
    import tensorflow as tf

    from bgan_tf.backbones import BackboneSpec
    from bgan_tf.models import Encoder

    # Architecture only: the trained weights (backbone included) come from the file.
    spec = BackboneSpec(config.backbone, None, config.backbone_input_size)
    enc = Encoder(spec, config.num_bits, config.hash_hidden, config.sign_mode, config.ste_surrogate,
                  config.beta_values[0], freeze_backbone=config.freeze_backbone,
                      hash_norm=config.hash_norm)
    enc(tf.zeros((1, config.backbone_input_size, config.backbone_input_size, 3)))
    return enc


def load_encoder(model_dir: str) -> LoadedEncoder:
    """Rebuild the encoder from ``model_dir/config.json`` and load its weights."""
    if not os.path.isdir(model_dir):
        raise UserError(f"model folder not found: {model_dir}")
    config, metadata = read_model_files(model_dir)
    enc = build_encoder(config)
    enc.load_weights(os.path.join(model_dir, "encoder.weights.h5"))
    return LoadedEncoder(enc, config, metadata, model_dir)


def load_generator(model_dir: str):
    """The trained generator (codes -> images in [0,1]), or None if the run had no GAN."""
    import tensorflow as tf

    from bgan_tf.models import Generator

    config, _ = read_model_files(model_dir)
    path = os.path.join(model_dir, "generator.weights.h5")
    if not config.use_gan or not os.path.isfile(path):
        return None
    gen = Generator(config.image_size, config.gen_channels, config.sync_batch_norm)
    gen(tf.zeros((1, config.num_bits)))
    gen.load_weights(path)
    return gen
