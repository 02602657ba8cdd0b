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
    if config.early_stopping_patience:
        held = early_stopping_holdout_size(config, num_images)
        if held < 1 or num_images - held < config.batch_size:
            raise UserError(f"--early_stopping_holdout {config.early_stopping_holdout:g} of {num_images} training "
                            f"images holds out {held}, leaving {num_images - held} to train on with --batch_size "
                            f"{config.batch_size}: use more images or another fraction, or --early_stopping_patience 0")


# Early stopping scores at most this many held-out images against at most this many
# training images, so one epoch's check costs ~6,000 encoder passes whatever N is.
EARLY_STOPPING_QUERIES = 1000
EARLY_STOPPING_DATABASE = 5000


def early_stopping_holdout_size(config: BGANConfig, num_images: int) -> int:
    return int(round(config.early_stopping_holdout * num_images))


def early_stopping_split(config: BGANConfig, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out rows, training rows), a draw seeded by the run's seed; all rows train
    when early stopping is off."""
    rows = np.arange(num_images, dtype=np.int64)
    if not config.early_stopping_patience:
        return rows[:0], rows
    held = np.sort(np.random.default_rng([config.seed, 1]).choice(
        num_images, early_stopping_holdout_size(config, num_images), replace=False))
    return held, np.setdiff1d(rows, held)


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    history: dict[str, list[float]]
    epochs_run: int
    seconds: dict[str, float]
    graph_label_agreement: float | None = None
    graph_pairs_per_item: float | None = None  # positive pairs (i, j), both orders, per training image
    best_epoch: int | None = None  # early stopping: the epoch whose networks were kept
    epochs_trained: int | None = None  # epochs completed in all (early stopping may end before --epochs)


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

    model.compile(e_optimizer=adam(config.lr_e), g_optimizer=adam(config.lr_g), d_optimizer=adam(config.lr_d),
                  backbone_optimizer=adam(config.lr_backbone) if config.lr_backbone else None)
    model.build_optimizers()
    return model


def _check_trained(encoder, encode, inputs: np.ndarray) -> None:
    """Before the model is written: refuse an encoder with non-finite weights (issue 27 case 6),
    warn loudly when the training images all get one code."""
    from bgan_tf.training.checkpoints import non_finite_weight
    from bgan_tf.training.divergence import warn_if_one_code

    bad = non_finite_weight({"encoder": encoder})
    if bad is not None:
        raise UserError(f"training diverged: {bad} is not finite; no model was written: lower the learning "
                        "rates (--lr_e, --lr_g, --lr_d) and rerun")
    warn_if_one_code(encode, inputs)


def train(config: BGANConfig, data: ImageData | None = None, verbose: int = 1) -> TrainResult:
    """Train BGAN as configured; resume if ``output_dir`` holds checkpoints.

    The chief holds `atomic.output_lock` on the run folder throughout, so a second
    training into the same folder is refused instead of interleaving checkpoints."""
    config.validate()
    if config.graph_model:  # a missing or broken folder is one line now, before any output or features
        model_folder.read_model_files(config.graph_model)
    if config.init_from:
        from bgan_tf.inference.keras_model import check_warm_start

        check_warm_start(config.init_from, config)
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


def _train(config: BGANConfig, data: ImageData | None, verbose: int, strategy, chief: bool,
           t0: float) -> TrainResult:
    import keras
    import tensorflow as tf

    from bgan_tf.data.features import cached_bottom, cached_features, graph_features
    from bgan_tf.modeling.factory import backbone_spec
    from bgan_tf.training.callbacks import (BetaSchedule, EpochCheckpoint, GraphEarlyStopping,
                                            ReconstructionSamples, fit_resumable)
    from bgan_tf.training.distribute import shard_by_data
    from bgan_tf.training.divergence import DivergenceGuard
    from bgan_tf.training.graph import RECALL_SAMPLE, build_graph
    from bgan_tf.training.progress import fit_progress

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
    seconds["features"] = time.time() - t

    t = time.time()
    # A second round (--graph_model) builds the graph from a trained backbone; the baselines
    # and evaluation keep this run's pretrained features.
    if config.graph_model:
        from bgan_tf.inference.keras_model import load_encoder

        feats = load_encoder(config.graph_model).backbone_features(data.images)
        logging.info("graph features of %d images from the backbone of %s", len(data), config.graph_model)
    else:
        feats = graph_features(config, data, backbone_feats)
    graph = build_graph(feats, config.k1, config.k2, config.knn, config.seed,
                        construction=config.graph_construction, diffusion_alpha=config.diffusion_alpha,
                        diffusion_steps=config.diffusion_steps,
                        diffusion_pairs_per_item=config.diffusion_pairs_per_item)
    seconds["graph"] = time.time() - t
    if graph.knn_recall is not None:
        logging.info("neighbourhood graph: approximate kNN (--knn %s), recall@%d %.3f against exact search "
                     "on %d sampled images", config.knn, min(config.k1, len(data) - 1), graph.knn_recall,
                     min(RECALL_SAMPLE, len(data)))
    agreement = graph.label_agreement(data.labels) if data.labels is not None and data.labels.ndim == 1 else None
    logging.info("neighbourhood graph: %d positive pairs (%.1f per item)%s", graph.num_positive_pairs,
                 graph.num_positive_pairs / len(data),
                 "" if agreement is None else f", {100 * agreement:.1f}% of pairs share a label")

    gan_images = images_for_gan(data.images, config.image_size)
    cached = bottom if bottom is not None else backbone_feats
    features_input = cached is not None
    x = cached if features_input else data.images.astype(np.float32)

    t = time.time()
    rank1 = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    with strategy.scope():
        model = build_bgan(config, graph, x, features_input, data.images, rank1_logs=rank1)
        if config.init_from:  # before the restore below: a resumed run's checkpoint overrides it
            from bgan_tf.inference.keras_model import warm_start_encoder

            warm_start_encoder(model.encoder, config.init_from)
            logging.info("encoder starts from the trained encoder of %s", config.init_from)
    if model.generator is not None:
        saved = dict(encoder=model.encoder, generator=model.generator, discriminator=model.discriminator,
                     e_optimizer=model.e_optimizer, g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer)
    else:
        saved = dict(encoder=model.encoder, e_optimizer=model.e_optimizer)
    if model.backbone_optimizer is not None:
        saved["backbone_optimizer"] = model.backbone_optimizer
    # Exact codes from what the encoder trains on (cached inputs or images): early stopping
    # and the reconstruction samples score with it.
    encode = (lambda v: model.encoder.encode_cached(v, training=False)) if features_input else \
        (lambda v: model.encoder(v, training=False))
    held, train_rows = early_stopping_split(config, len(data))
    stopper = None
    if config.early_stopping_patience:
        rng = np.random.default_rng([config.seed, 2])
        queries = held[np.sort(rng.permutation(held.size)[:EARLY_STOPPING_QUERIES])]
        db = train_rows[np.sort(rng.permutation(train_rows.size)[:EARLY_STOPPING_DATABASE])]
        networks = {k: v for k, v in saved.items() if isinstance(v, keras.Model)}
        stopper = GraphEarlyStopping(encode, x[queries], x[db], graph.block(queries, db) > 0,
                                     config.early_stopping_patience, os.path.join(out_dir, "checkpoints", "best"),
                                     networks, write=chief)
        saved["early_stopping"] = stopper.state
        logging.info("early stopping: %d training images held out; %d of them score against %d training images "
                     "after every epoch", held.size, queries.size, db.size)
    ckpt = EpochCheckpoint(os.path.join(out_dir, "checkpoints"), write=chief, save_every_steps=config.save_every_steps,
                           **saved)
    try:
        first_epoch = ckpt.restore(os.path.join(config.output_dir, "checkpoints"))  # workers resume from the chief's
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        # A run of an older version (no config.json to compare) with other network shapes.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{config.output_dir} holds checkpoints that this configuration cannot resume ({first}); "
                        "choose a new --output_dir, or rerun with that run's settings") from None
    history: dict[str, list[float]] = {}
    stopped = stopper is not None and stopper.stopped
    if (first_epoch >= config.epochs or stopped) and os.path.isdir(model_dir):
        logging.info("run already finished (%d epochs); model at %s", first_epoch, model_dir)
        best = int(stopper.best_epoch.numpy()) if stopper is not None else None
        return TrainResult(model_dir, history, 0, seconds, agreement, graph.num_positive_pairs / len(data),
                           best, first_epoch)

    if chief:  # first write into the run folder: marks it as ours (is_run_dir), says how it was trained
        atomic.write_text(os.path.join(out_dir, "config.json"), config.to_json())
    steps = config.steps_per_epoch or len(train_rows) // config.batch_size
    per_pass = len(train_rows) // config.batch_size
    model.set_run_length(config.epochs * steps, steps)  # instance noise spans the run; content warm-up counts epochs

    def make_dataset(start, stop):
        # fit() keeps one iterator across epochs, so fit epoch e reads batches
        # [e*steps, (e+1)*steps) of the stream of seeded passes over the data: start there.
        first = start * steps
        ds = training_dataset(gan_images, x, config.batch_size, config.seed, first // per_pass,
                              -(-stop * steps // per_pass), flip=config.flip_augment, mirrored_inputs=mirrored,
                              other_view=bool(config.w_consistency),
                              items=train_rows)
        return shard_by_data(ds.skip(first % per_pass))

    # The early-stopping state is updated before the checkpoint that saves it.
    # The divergence guard first: no callback after it sees a step with a non-finite loss.
    callbacks = [DivergenceGuard(ckpt, config.init_from),
                 BetaSchedule(model.encoder.beta, config.beta_values, config.beta_every),
                 *([stopper] if stopper is not None else []), ckpt]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False))
        if model.generator is not None:
            n = min(8, len(data))
            callbacks.append(ReconstructionSamples(encode, model.generator, gan_images[:n], x[:n],
                                                   os.path.join(out_dir, "samples"),
                                                   os.path.join(out_dir, "logs", "samples"), config.sample_every))
    if not stopped:  # (stopped, but killed before the model was written: write it now)
        fit_verbose, progress = fit_progress(verbose)  # off a terminal: one line per epoch, no bar
        history = fit_resumable(model, make_dataset, ckpt, first_epoch, config.epochs, steps,
                                callbacks + progress, fit_verbose)
    epochs_trained = int(ckpt.epoch.numpy())  # completed epochs: restored, then moved by each epoch's save
    best_epoch = None
    if stopper is not None:
        # (Workers' networks are thrown away below: only the chief's written model needs them.)
        best_epoch = stopper.restore_best() if chief else int(stopper.best_epoch.numpy())
        logging.info("early stopping: kept the networks of epoch %d of %d (held-out graph mAP %.4f)", best_epoch,
                     epochs_trained, float(stopper.best.numpy()))
    seconds["train"] = time.time() - t
    if chief:
        _check_trained(model.encoder, encode, x)
        model_folder.write_model_folder(model_dir, config, model.encoder, data, model.generator, model.discriminator,
                                        commit=commit)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    seconds["total"] = time.time() - t0
    return TrainResult(model_dir, history, epochs_trained - first_epoch, seconds, agreement,
                       graph.num_positive_pairs / len(data), best_epoch, epochs_trained)
