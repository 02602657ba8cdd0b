"""Load a trained model folder's networks and turn images into codes.

`load_encoder` / `load_generator` rebuild the networks from the config.json that
`bgan_tf.inference.model_folder.read_model_files` reads and validates, then load their
weights; `LoadedEncoder` encodes uint8 images (or cached backbone features) to signs.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.inference.model_folder import check_weights_id, first_line, read_model_files, unusable_model


# Pixels at the backbone's input size per encode call: 128 images up to 128 px. A fixed 128
# cost ~15 MB an image for MobileNetV2 at 224 px in a graph function (~1.9 GB a call: most of
# a 224 px training run's closing evaluation); this keeps a call near 0.6 GB at any size.
ENCODE_BATCH_PIXELS = 128 * 128 * 128


def encode_batch_size(input_size: int) -> int:
    """Images per encode call at ``input_size``: ENCODE_BATCH_PIXELS of them, 1 to 128."""
    return max(1, min(128, ENCODE_BATCH_PIXELS // int(input_size) ** 2))


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

    # The model resizes any input to input_size, bilinear (modeling.backbones.Preprocess);
    # the search service shrinks uploads the same way before batching them.
    input_resize = "bilinear"

    @property
    def input_size(self) -> int:
        return int(self.config.backbone_input_size)

    @property
    def num_bits(self) -> int:
        return int(self.config.num_bits)

    @property
    def model_id(self) -> str:
        return str(self.metadata.get("model_id", ""))

    def backbone_features(self, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
        """float32 [N, D] pooled features of this encoder's backbone as it was trained
        (fine-tuned layers included): what benchmarks/graph_rounds.py builds a second round's
        graph from. On XNNPACK from XNNPACK_MIN_IMAGES images, as the features."""
        from bgan_tf.data.features import image_forward

        net = self.model
        run = image_forward(net.backbone, net.spec, images, f"the backbone of {self.model_dir}",
                            lambda v: net.features(v, training=False))
        return np.concatenate([run(images[s:s + batch_size]) for s in range(0, len(images), batch_size)]
                              ).astype(np.float32)

    def encode(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """``batch_size`` None: `encode_batch_size` of the input size (128 up to 128 px)."""
        import tensorflow as tf

        batch_size = batch_size or encode_batch_size(self.input_size)
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


def build_encoder(config: BGANConfig):
    """An unweighted encoder with the architecture of ``config`` (weights random)."""
    import tensorflow as tf

    from bgan_tf.modeling.factory import build_encoder

    # Architecture only: the trained weights (backbone included) come from the file.
    enc = build_encoder(config, weights=None)
    enc(tf.zeros((1, config.backbone_input_size, config.backbone_input_size, 3)))
    return enc


def _load_weights(model, model_dir: str, name: str, described: str) -> None:
    """``model.load_weights(model_dir/name)``; a truncated, foreign or mismatched file is a UserError.

    Keras warns once per layer before it fails on a mismatched file; those warnings are
    dropped when the load fails (the error says it all) and passed on when it succeeds.
    """
    path = os.path.join(model_dir, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except OSError as e:  # h5py: truncated file, not HDF5, unreadable
            raise unusable_model(model_dir, name, f"is truncated or not a Keras weights file "
                                 f"({first_line(e)})") from None
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise unusable_model(model_dir, name, f"does not match the architecture in config.json "
                                 f"({described}): {first_line(e).split('. Example')[0]}") from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_encoder(model_dir: str) -> LoadedEncoder:
    """Rebuild the encoder from ``model_dir/config.json`` and load its weights.

    The one loader every binary uses: any file of the folder that is missing, not valid
    JSON, truncated, or from another architecture is a UserError naming the folder and
    the file (a binary prints it as one line and exits 2).
    """
    config, metadata = read_model_files(model_dir)
    try:
        enc = build_encoder(config)
    except UserError as e:  # an unknown backbone name
        raise unusable_model(model_dir, "config.json", f"names a backbone that cannot be built ({e})") from None
    except (ValueError, TypeError, KeyError) as e:
        raise unusable_model(model_dir, "config.json", f"describes an encoder that cannot be built "
                             f"({first_line(e)})") from None
    _load_weights(enc, model_dir, "encoder.weights.h5",
                  f"backbone {config.backbone}, {config.num_bits} bits")
    check_weights_id(model_dir, metadata, enc.weights)  # the id an index trusts is the weights'
    return LoadedEncoder(enc, config, metadata, model_dir)


def load_generator(model_dir: str):
    """The trained generator (codes -> images in [0,1]), or None if the run had no GAN."""
    import tensorflow as tf

    from bgan_tf.modeling.factory import build_generator

    config, _ = read_model_files(model_dir)
    path = os.path.join(model_dir, "generator.weights.h5")
    if not config.use_gan or not os.path.isfile(path):
        return None
    gen = build_generator(config)
    gen(tf.zeros((1, config.num_bits)))
    _load_weights(gen, model_dir, "generator.weights.h5", f"generator for {config.num_bits} bits")
    return gen
