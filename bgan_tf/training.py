"""``train(config)``: data -> features -> neighbourhood graph -> BGAN -> saved model.

Rerunning the same command with the same ``output_dir`` resumes from the last
epoch checkpoint; a finished run is not retrained (its saved model is
returned). Only the chief writes files under a multi-worker strategy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from absl import logging

from bgan_tf.config import BGANConfig
from bgan_tf.data import ImageData, images_for_gan, load_images, training_dataset
from bgan_tf.errors import UserError

MODEL_SUBDIR = "model"


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    history: dict[str, list[float]]
    epochs_run: int
    seconds: dict[str, float]
    graph_label_agreement: float | None = None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def load_training_data(config: BGANConfig) -> ImageData:
    size = None if config.dataset.startswith(("folder:", "npz:")) or os.path.isdir(config.dataset) else None
    return load_images(config.dataset, tfds_split=config.tfds_split, data_dir=config.data_dir,
                       download=config.download, max_images=config.max_images, size=size)


def graph_features(config: BGANConfig, data: ImageData, backbone_feats: np.ndarray | None) -> np.ndarray:
    if config.graph_features == "pixels":
        return images_for_gan(data.images, config.image_size).reshape(len(data), -1)
    if backbone_feats is not None:
        return backbone_feats
    from bgan_tf.backbones import BackboneSpec
    from bgan_tf.features import cached_features

    spec = BackboneSpec(config.backbone, config.backbone_weights, config.backbone_input_size)
    if config.backbone == "small_cnn":
        raise UserError("--graph_features backbone needs a pretrained backbone; small_cnn is untrained: "
                        "use --graph_features pixels or a pretrained --backbone")
    return cached_features(data.images, spec, data.fingerprint(), config.feature_cache_dir)


def _save_model_dir(final_dir: str, config: BGANConfig, model, data: ImageData) -> None:
    """Write encoder/generator/discriminator weights + config + metadata, atomically."""
    parent = os.path.dirname(os.path.abspath(final_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".model_tmp_")
    try:
        model.encoder.save_weights(os.path.join(tmp, "encoder.weights.h5"))
        if model.generator is not None:
            model.generator.save_weights(os.path.join(tmp, "generator.weights.h5"))
            model.discriminator.save_weights(os.path.join(tmp, "discriminator.weights.h5"))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(config.to_json())
        h = hashlib.sha256()
        for v in model.encoder.weights:
            h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
        meta = {
            "format": "bgan_tf.model/1",
            "model_id": h.hexdigest()[:16],
            "num_bits": config.num_bits,
            "backbone": {"name": config.backbone, "weights": config.backbone_weights,
                         "input_size": config.backbone_input_size, "frozen": config.freeze_backbone},
            "preprocessing": {"input": "uint8 RGB [N,H,W,3], any H x W",
                              "resize": f"bilinear to {config.backbone_input_size}x{config.backbone_input_size}",
                              "normalisation": model.encoder.spec.normalisation},
            "image_size": config.image_size,
            "training_data": {"dataset": config.dataset, "count": len(data), "fingerprint": data.fingerprint()},
            "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(os.path.join(tmp, "metadata.json"), "w") as f:
            json.dump(meta, f, indent=2)
        if os.path.isdir(final_dir):
            old = final_dir + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final_dir, old)
            os.replace(tmp, final_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_bgan(config: BGANConfig, graph, x_example: np.ndarray, features_input: bool, image_example: np.ndarray,
               rank1_logs: bool = False):
    """BGAN with compiled optimizers, every weight and optimizer slot created.

    Call inside ``strategy.scope()`` when distributing."""
    import keras

    from bgan_tf.backbones import BackboneSpec
    from bgan_tf.bgan import BGAN
    from bgan_tf.models import Encoder

    spec = BackboneSpec(config.backbone, config.backbone_weights, config.backbone_input_size)
    encoder = Encoder(spec, config.num_bits, config.hash_hidden, config.sign_mode, config.ste_surrogate,
                      config.beta_values[0], freeze_backbone=config.freeze_backbone,
                      hash_norm=config.hash_norm)
    if config.sync_batch_norm:  # the backbone's BN layers too, not only G's and D's
        from bgan_tf.distribute import synchronize_batch_norm

        synchronize_batch_norm(encoder)
    model = BGAN(config, encoder, graph, features_input=features_input, rank1_logs=rank1_logs)
    encoder(image_example[:1].astype(np.float32))  # builds backbone + head
    model.build_all(x_example)

    def adam(lr):
        opt = keras.optimizers.Adam(lr, beta_1=config.adam_beta_1, epsilon=config.adam_epsilon)
        # float16 gradients underflow without dynamic loss scaling.
        return keras.optimizers.LossScaleOptimizer(opt) if config.mixed_precision else opt

    model.compile(e_optimizer=adam(config.lr_e), g_optimizer=adam(config.lr_g), d_optimizer=adam(config.lr_d))
    model.build_optimizers()
    return model


def train(config: BGANConfig, data: ImageData | None = None, verbose: int = 1) -> TrainResult:
    """Train BGAN as configured; resume if ``output_dir`` holds checkpoints."""
    config.validate()
    import keras
    import tensorflow as tf

    from bgan_tf.backbones import BackboneSpec
    from bgan_tf.callbacks import BetaSchedule, EpochCheckpoint, ReconstructionSamples, fit_resumable
    from bgan_tf.distribute import is_chief, make_strategy, shard_by_data
    from bgan_tf.features import cached_features
    from bgan_tf.graph import build_graph

    seconds: dict[str, float] = {}
    t0 = time.time()
    strategy = make_strategy(config.strategy, config.num_cpu_devices)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    chief = is_chief(strategy)
    out_dir = config.output_dir if chief else tempfile.mkdtemp(prefix="bgan_worker_")
    model_dir = os.path.join(out_dir, MODEL_SUBDIR)

    if data is None:
        data = load_training_data(config)
    seconds["load_data"] = time.time() - t0
    logging.info("training data: %d images %s", len(data), data.images.shape[1:])

    t = time.time()
    spec = BackboneSpec(config.backbone, config.backbone_weights, config.backbone_input_size)
    backbone_feats = None
    if config.freeze_backbone:
        backbone_feats = cached_features(data.images, spec, data.fingerprint(), config.feature_cache_dir)
    seconds["features"] = time.time() - t

    t = time.time()
    graph = build_graph(graph_features(config, data, backbone_feats), config.k1, config.k2)
    seconds["graph"] = time.time() - t
    agreement = graph.label_agreement(data.labels) if data.labels is not None and data.labels.ndim == 1 else None
    logging.info("neighbourhood graph: %d positive pairs (%.1f per item)%s", graph.num_positive_pairs,
                 graph.num_positive_pairs / len(data),
                 "" if agreement is None else f", {100 * agreement:.1f}% of pairs share a label")

    gan_images = images_for_gan(data.images, config.image_size)
    features_input = backbone_feats is not None
    x = backbone_feats if features_input else data.images.astype(np.float32)

    t = time.time()
    rank1 = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with strategy.scope():
        model = build_bgan(config, graph, x, features_input, data.images, rank1_logs=rank1)
    ckpt = EpochCheckpoint(os.path.join(out_dir, "checkpoints"), write=chief, save_every_steps=config.save_every_steps,
                           encoder=model.encoder,
                           generator=model.generator, discriminator=model.discriminator,
                           e_optimizer=model.e_optimizer, g_optimizer=model.g_optimizer,
                           d_optimizer=model.d_optimizer) if model.generator is not None else \
        EpochCheckpoint(os.path.join(out_dir, "checkpoints"), write=chief, save_every_steps=config.save_every_steps,
                        encoder=model.encoder,
                        e_optimizer=model.e_optimizer)
    first_epoch = ckpt.restore(os.path.join(config.output_dir, "checkpoints"))  # workers resume from the chief's
    history: dict[str, list[float]] = {}
    if first_epoch >= config.epochs and os.path.isdir(model_dir):
        logging.info("run already finished (%d epochs); model at %s", first_epoch, model_dir)
        return TrainResult(model_dir, history, 0, seconds, agreement)

    steps = config.steps_per_epoch or len(data) // config.batch_size
    per_pass = len(data) // config.batch_size

    def make_dataset(start, stop):
        # fit() keeps one iterator across epochs, so fit epoch e reads batches
        # [e*steps, (e+1)*steps) of the stream of seeded passes over the data: start there.
        first = start * steps
        ds = training_dataset(gan_images, x, config.batch_size, config.seed, first // per_pass,
                              -(-stop * steps // per_pass))
        return shard_by_data(ds.skip(first % per_pass))

    callbacks = [BetaSchedule(model.encoder.beta, config.beta_values, config.beta_every), ckpt]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False))
        if model.generator is not None:
            n = min(8, len(data))
            encode = (lambda v: model.encoder.encode_features(v, training=False)) if features_input else \
                (lambda v: model.encoder(v, training=False))
            callbacks.append(ReconstructionSamples(encode, model.generator, gan_images[:n], x[:n],
                                                   os.path.join(out_dir, "samples"),
                                                   os.path.join(out_dir, "logs", "samples"), config.sample_every))
    history = fit_resumable(model, make_dataset, ckpt, first_epoch, config.epochs, steps, callbacks, verbose)
    seconds["train"] = time.time() - t
    if chief:
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            f.write(config.to_json())
        _save_model_dir(model_dir, config, model, data)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    seconds["total"] = time.time() - t0
    return TrainResult(model_dir, history, config.epochs - first_epoch, seconds, agreement)
