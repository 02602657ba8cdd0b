"""``train(config)``: data -> features -> neighbourhood graph -> BGAN -> saved model.

Rerunning the same command with the same ``output_dir`` resumes from the last
epoch checkpoint; a finished run is not retrained (its saved model is
returned). Only the chief writes files under a multi-worker strategy.

What the run folder (``output_dir``) may hold and which settings a rerun may change is
`bgan_tf.training.run_folder`'s. The ``model`` folder inside it is written whole by
`bgan_tf.inference.model_folder.write_model_folder`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
from absl import logging

from bgan_tf import atomic
from bgan_tf.config import BGANConfig, check_graph_construction
from bgan_tf.data.pipeline import images_for_gan, training_dataset
from bgan_tf.data.sources import ImageData, load_training_data
from bgan_tf.errors import UserError
from bgan_tf.inference import model_folder
# (check_run_dir and is_run_dir are imported from here by the binaries and tests.)
from bgan_tf.training.run_folder import (MODEL_SUBDIR, RUN_WHAT, check_run_dir, clean_stale_temps,  # noqa: F401
                                        is_run_dir)

# Upper bound on the neighbourhood graph's candidate pairs, N * K2 * (K1 + 1): 1M images at
# the default K1/K2. build_graph works in row chunks, so what grows with it is the result:
# P, its transpose and the keys, at most ~26 bytes a pair when every P(i) is full and
# disjoint from its transpose; benchmarks/results/graph_scale.md measures real graphs.
MAX_GRAPH_PAIRS = 640_000_000


def check_data_fits(config: BGANConfig, num_images: int) -> None:
    """UserError when the training set cannot fill one batch or its graph would be too big."""
    if num_images < config.batch_size:
        raise UserError(f"{num_images} training images is fewer than --batch_size {config.batch_size}; "
                        "lower --batch_size (or --holdout_per_class), or use more images")
    pairs = num_images * min(config.k2, num_images) * (min(config.k1, num_images - 1) + 1)
    if pairs > MAX_GRAPH_PAIRS:
        raise UserError(f"the neighbourhood graph of {num_images:,} images with --k1 {config.k1} and --k2 "
                        f"{config.k2} may hold {pairs:,} candidate pairs (limit {MAX_GRAPH_PAIRS:,}); "
                        "lower --k1/--k2 or --max_images")
    check_graph_construction(config.graph_construction, num_images)


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    history: dict[str, list[float]]
    epochs_run: int
    seconds: dict[str, float]
    graph_label_agreement: float | None = None
    graph_pairs_per_item: float | None = None  # positive pairs (i, j), both orders, per training image
    epochs_trained: int | None = None  # epochs completed in all


def build_bgan(config: BGANConfig, graph, x_example: np.ndarray, features_input: bool, image_example: np.ndarray,
               rank1_logs: bool = False):
    """BGAN with compiled optimizers, every weight and optimizer slot created.

    Call inside ``strategy.scope()`` when distributing."""
    import keras

    from bgan_tf.modeling.factory import build_encoder
    from bgan_tf.training.bgan import BGAN

    encoder = build_encoder(config)
    if config.sync_batch_norm:  # the backbone's BN layers too, not only G's and D's
        from bgan_tf.training.distribute import synchronize_batch_norm

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


def _check_trained(encoder, encode, inputs: np.ndarray, batch_size: int) -> None:
    """Before the model is written: refuse an encoder with non-finite weights (issue 27 case 6),
    warn loudly when the training images all get one code. The codes are computed at the
    training batch size, which the training step already fitted in memory: a fixed 256 images,
    each resized to the backbone's input inside the encoder, took ~22 GB at 224 px."""
    from bgan_tf.training.checkpoints import non_finite_weight
    from bgan_tf.training.divergence import warn_if_one_code

    bad = non_finite_weight({"encoder": encoder})
    if bad is not None:
        raise UserError(f"training diverged: {bad} is not finite; no model was written: lower the learning "
                        "rates (--lr_e, --lr_g, --lr_d) and rerun")
    warn_if_one_code(encode, inputs, batch=batch_size)


def train(config: BGANConfig, data: ImageData | None = None, verbose: int = 1) -> TrainResult:
    """Train BGAN as configured; resume if ``output_dir`` holds checkpoints.

    The chief holds `atomic.output_lock` on the run folder throughout, so a second
    training into the same folder is refused instead of interleaving checkpoints."""
    config.validate()
    import keras
    import tensorflow as tf

    from bgan_tf.training.distribute import is_chief, make_strategy

    t0 = time.time()
    strategy = make_strategy(config.strategy, config.num_cpu_devices)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if not is_chief(strategy):
        return _train(config, data, verbose, strategy, False, t0)
    check_run_dir(config)  # before the lock file is made beside it
    with atomic.output_lock(config.output_dir, RUN_WHAT):
        check_run_dir(config)
        clean_stale_temps(config.output_dir)
        return _train(config, data, verbose, strategy, True, t0)


@dataclasses.dataclass
class _Inputs:
    """What the encoder trains on: the data, G's images, the encoder's inputs (images or
    cached features / bottom activations) and the mirrors' cached inputs (or None)."""
    data: ImageData
    gan_images: np.ndarray
    x: np.ndarray
    features_input: bool
    mirrored: np.ndarray | None
    backbone_feats: np.ndarray | None


def _inputs(config: BGANConfig, data: ImageData) -> _Inputs:
    """The cached backbone features (frozen backbone) or bottom activations (--trainable_from)."""
    from bgan_tf.data.features import cached_bottom, cached_features
    from bgan_tf.modeling.factory import backbone_spec

    spec = backbone_spec(config)
    backbone_feats = bottom = None
    if config.trainable_from:  # the top trains on the frozen bottom's cached activations
        bottom = cached_bottom(data.images, spec, config.trainable_from, data.fingerprint(), config.feature_cache_dir)
    elif config.freeze_backbone:
        backbone_feats = cached_features(data.images, spec, data.fingerprint(), config.feature_cache_dir)
    mirrored = None
    if (config.flip_augment or config.w_consistency) and (bottom is not None or backbone_feats is not None):
        mirror = data.images[:, :, ::-1]  # a view: the caches read it batch by batch
        key = data.fingerprint() + "|mirror"
        mirrored = cached_bottom(mirror, spec, config.trainable_from, key, config.feature_cache_dir) \
            if bottom is not None else cached_features(mirror, spec, key, config.feature_cache_dir)
    cached = bottom if bottom is not None else backbone_feats
    x = cached if cached is not None else data.images.astype(np.float32)
    return _Inputs(data, images_for_gan(data.images, config.image_size), x, cached is not None, mirrored,
                   backbone_feats)


def _graph(config: BGANConfig, inputs: _Inputs):
    """The neighbourhood graph and the share of its pairs that share a label (or None)."""
    from bgan_tf.data.features import graph_features
    from bgan_tf.training.graph import RECALL_SAMPLE, build_graph

    data = inputs.data
    feats = graph_features(config, data, inputs.backbone_feats)
    graph = build_graph(feats, config.k1, config.k2, config.knn, config.seed,
                        construction=config.graph_construction, diffusion_alpha=config.diffusion_alpha,
                        diffusion_steps=config.diffusion_steps)
    if graph.knn_recall is not None:
        logging.info("neighbourhood graph: approximate kNN (--knn %s), recall@%d %.3f against exact search "
                     "on %d sampled images", config.knn, min(config.k1, len(data) - 1), graph.knn_recall,
                     min(RECALL_SAMPLE, len(data)))
    agreement = graph.label_agreement(data.labels) if data.labels is not None and data.labels.ndim == 1 else None
    logging.info("neighbourhood graph: %d positive pairs (%.1f per item)%s", graph.num_positive_pairs,
                 graph.num_positive_pairs / len(data),
                 "" if agreement is None else f", {100 * agreement:.1f}% of pairs share a label")
    return graph, agreement


def _model(config: BGANConfig, inputs: _Inputs, graph, strategy, out_dir: str, chief: bool):
    """(BGAN, its EpochCheckpoint restored from the run folder, the epoch to resume from)."""
    import tensorflow as tf

    from bgan_tf.training.callbacks import EpochCheckpoint

    rank1 = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with strategy.scope():
        model = build_bgan(config, graph, inputs.x, inputs.features_input, inputs.data.images, rank1_logs=rank1)
    saved = dict(encoder=model.encoder, e_optimizer=model.e_optimizer)
    if model.generator is not None:
        saved.update(generator=model.generator, discriminator=model.discriminator, g_optimizer=model.g_optimizer,
                     d_optimizer=model.d_optimizer)
    ckpt = EpochCheckpoint(os.path.join(out_dir, "checkpoints"), write=chief, save_every_steps=config.save_every_steps,
                           **saved)
    try:
        first_epoch = ckpt.restore(os.path.join(config.output_dir, "checkpoints"))  # workers resume from the chief's
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        # A run of an older version (no config.json to compare) with other network shapes.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{config.output_dir} holds checkpoints that this configuration cannot resume ({first}); "
                        "choose a new --output_dir, or rerun with that run's settings") from None
    return model, ckpt, first_epoch


def _encode_fn(model, features_input: bool):
    """Exact codes from what the encoder trains on (cached inputs or images), as a graph
    function: called eagerly, the Keras encoder kept every layer's activations of the batch
    alive, ~84 MB an image for MobileNetV2 at 224 px against ~10 MB in a graph."""
    import tensorflow as tf

    if features_input:
        return tf.function(lambda v: model.encoder.encode_cached(v, training=False), reduce_retracing=True)
    return tf.function(lambda v: model.encoder(v, training=False), reduce_retracing=True)


def _fit(config: BGANConfig, inputs: _Inputs, model, ckpt, first_epoch: int, out_dir: str, chief: bool,
         verbose: int) -> dict[str, list[float]]:
    """fit() from the restored position to config.epochs, with the run's callbacks."""
    import keras

    from bgan_tf.training.callbacks import BetaSchedule, ReconstructionSamples, fit_resumable
    from bgan_tf.training.distribute import shard_by_data
    from bgan_tf.training.divergence import DivergenceGuard
    from bgan_tf.training.progress import fit_progress

    n = len(inputs.data)
    steps = config.steps_per_epoch or n // config.batch_size
    per_pass = n // config.batch_size

    def make_dataset(start, stop):
        # fit() keeps one iterator across epochs, so fit epoch e reads batches
        # [e*steps, (e+1)*steps) of the stream of seeded passes over the data: start there.
        first = start * steps
        ds = training_dataset(inputs.gan_images, inputs.x, config.batch_size, config.seed, first // per_pass,
                              -(-stop * steps // per_pass), flip=config.flip_augment,
                              mirrored_inputs=inputs.mirrored, other_view=bool(config.w_consistency))
        return shard_by_data(ds.skip(first % per_pass))

    # The divergence guard first: no callback after it sees a step with a non-finite loss.
    callbacks = [DivergenceGuard(ckpt), BetaSchedule(model.encoder.beta, config.beta_values, config.beta_every), ckpt]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False))
        if model.generator is not None:
            k = min(8, n)
            callbacks.append(ReconstructionSamples(_encode_fn(model, inputs.features_input), model.generator,
                                                   inputs.gan_images[:k], inputs.x[:k],
                                                   os.path.join(out_dir, "samples"),
                                                   os.path.join(out_dir, "logs", "samples"), config.sample_every))
    fit_verbose, progress = fit_progress(verbose)  # off a terminal: one line per epoch, no bar
    return fit_resumable(model, make_dataset, ckpt, first_epoch, config.epochs, steps, callbacks + progress,
                         fit_verbose)


def _train(config: BGANConfig, data: ImageData | None, verbose: int, strategy, chief: bool,
           t0: float) -> TrainResult:
    """The stages: inputs, graph, model, fit, save."""
    seconds: dict[str, float] = {}
    commit = model_folder.git_commit()  # the code this run imported, for the model's metadata
    out_dir = config.output_dir if chief else tempfile.mkdtemp(prefix="bgan_worker_")
    model_dir = os.path.join(out_dir, MODEL_SUBDIR)
    if data is None:
        data = load_training_data(config)
    seconds["load_data"] = time.time() - t0
    logging.info("training data: %d images %s", len(data), data.images.shape[1:])
    check_data_fits(config, len(data))

    t = time.time()
    inputs = _inputs(config, data)
    seconds["features"] = time.time() - t
    t = time.time()
    graph, agreement = _graph(config, inputs)
    seconds["graph"] = time.time() - t
    pairs_per_item = graph.num_positive_pairs / len(data)

    t = time.time()
    model, ckpt, first_epoch = _model(config, inputs, graph, strategy, out_dir, chief)
    if first_epoch >= config.epochs and os.path.isdir(model_dir):
        logging.info("run already finished (%d epochs); model at %s", first_epoch, model_dir)
        return TrainResult(model_dir, {}, 0, seconds, agreement, pairs_per_item, first_epoch)
    if chief:  # first write into the run folder: marks it as ours (is_run_dir), says how it was trained
        atomic.write_text(os.path.join(out_dir, "config.json"), config.to_json())
    history = _fit(config, inputs, model, ckpt, first_epoch, out_dir, chief, verbose)
    epochs_trained = int(ckpt.epoch.numpy())  # completed epochs: restored, then moved by each epoch's save
    seconds["train"] = time.time() - t

    if chief:
        _check_trained(model.encoder, _encode_fn(model, inputs.features_input), inputs.x, config.batch_size)
        model_folder.write_model_folder(model_dir, config, model.encoder, data, model.generator, model.discriminator,
                                        commit=commit)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    seconds["total"] = time.time() - t0
    return TrainResult(model_dir, history, epochs_trained - first_epoch, seconds, agreement, pairs_per_item,
                       epochs_trained)
