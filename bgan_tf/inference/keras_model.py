"""Load a trained model folder and turn images into codes."""

from __future__ import annotations

import json
import os
import warnings

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


MODEL_FILES = ("config.json", "metadata.json", "encoder.weights.h5")
WHAT_TO_DO = "retrain the model (python -m bgan_tf.train) or pass another model folder"


def unusable_model(model_dir: str, name: str, problem: str) -> UserError:
    """The one message for a model folder whose file ``name`` cannot be used."""
    return UserError(f"cannot load the model in {model_dir}: {name} {problem}; {WHAT_TO_DO}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


def _read_json_object(model_dir: str, name: str) -> dict:
    path = os.path.join(model_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise unusable_model(model_dir, name, f"is not valid JSON ({_first_line(e)})") from None
    except OSError as e:
        raise unusable_model(model_dir, name, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(obj, dict):
        raise unusable_model(model_dir, name, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


def _is_int(v: object, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_config(model_dir: str, config: BGANConfig, metadata: dict) -> None:
    """The fields the encoder's architecture is built from, checked before building it
    (a bad value would otherwise surface as a Keras traceback)."""
    bad = []
    if not _is_int(config.num_bits, 1):
        bad.append(f"num_bits {config.num_bits!r} (need an integer >= 1)")
    if not _is_int(config.backbone_input_size, 1):
        bad.append(f"backbone_input_size {config.backbone_input_size!r} (need an integer >= 1)")
    if not isinstance(config.backbone, str) or not config.backbone:
        bad.append(f"backbone {config.backbone!r} (need a backbone name)")
    hidden = config.hash_hidden if isinstance(config.hash_hidden, (tuple, list)) else None
    if hidden is None or not all(_is_int(h, 1) for h in hidden):
        bad.append(f"hash_hidden {config.hash_hidden!r} (need a list of integers >= 1)")
    if config.sign_mode not in ("tanh", "app", "ste"):
        bad.append(f"sign_mode {config.sign_mode!r} (need tanh, app or ste)")
    if bad:
        raise unusable_model(model_dir, "config.json", "has invalid values: " + "; ".join(bad))
    meta_bits = metadata.get("num_bits")
    if meta_bits is not None and meta_bits != config.num_bits:
        raise unusable_model(model_dir, "config.json", f"says num_bits {config.num_bits} but metadata.json "
                             f"says {meta_bits}: the files come from different models")


def read_model_files(model_dir: str) -> tuple[BGANConfig, dict]:
    """config.json and metadata.json of a model folder; UserError naming the file if unusable."""
    if not os.path.isdir(model_dir):
        if os.path.exists(model_dir):
            raise UserError(f"{model_dir} is a file, not a model folder; pass the 'model' folder "
                            "that training wrote (e.g. runs/digits/model)")
        raise UserError(f"model folder not found: {model_dir}")
    missing = [n for n in MODEL_FILES if not os.path.isfile(os.path.join(model_dir, n))]
    if len(missing) == len(MODEL_FILES):
        raise UserError(f"{model_dir} is not a trained bgan_tf model (no {', '.join(MODEL_FILES)}); "
                        "pass the 'model' folder that training wrote (e.g. runs/digits/model)")
    if missing:
        raise UserError(f"{model_dir} is not a trained bgan_tf model (missing {', '.join(missing)}); "
                        f"{WHAT_TO_DO}")
    raw = _read_json_object(model_dir, "config.json")
    try:
        config = BGANConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise unusable_model(model_dir, "config.json", f"is not a bgan_tf config ({_first_line(e)})") from None
    metadata = _read_json_object(model_dir, "metadata.json")
    _check_config(model_dir, config, metadata)
    return config, metadata


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
                                 f"({_first_line(e)})") from None
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise unusable_model(model_dir, name, f"does not match the architecture in config.json "
                                 f"({described}): {_first_line(e).split('. Example')[0]}") from None
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
                             f"({_first_line(e)})") from None
    _load_weights(enc, model_dir, "encoder.weights.h5",
                  f"backbone {config.backbone}, {config.num_bits} bits")
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
