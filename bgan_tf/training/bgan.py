"""``BGAN``: the Keras model that trains encoder, generator and discriminator.

Follows keras-io's "GAN overriding train_step": ``compile()`` takes one
optimizer per network, ``train_step`` computes every loss in one pass and
applies each network's gradients with its own optimizer, and ``fit()`` runs
it with callbacks.

Batches are dicts: ``image`` (float32 [b, S, S, 3] in [0, 1], what G makes
and D judges), ``x`` (the encoder input: [0,255] images, or cached backbone
features when the backbone is frozen) and ``index`` (int64 item ids, for
the neighbourhood block S_B); ``Encoder.encode_cached`` maps cached features (or,
with ``trainable_from``, cached bottom activations) to codes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bgan_tf.training import losses
from bgan_tf.config import BGANConfig
from bgan_tf.training.graph import NeighbourGraph, block_lookup
from bgan_tf.modeling.factory import build_discriminator, build_generator
from bgan_tf.modeling.networks import Encoder

LOSS_NAMES = ("loss_e", "nbr", "quant", "pixel", "feature", "adv_g", "loss_d")


def _replica_context():
    return tf.distribute.get_replica_context()


def _gather(x):
    ctx = _replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    # identity() places the value on this replica's device: all_gather sends to
    # x.device, which is empty for tensors from the input iterator under
    # MultiWorkerMirroredStrategy ("destinations can not be empty").
    return ctx.all_gather(tf.identity(x), axis=0)


def _sum_over_replicas(x):
    ctx = _replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


class BGAN(keras.Model):
    def __init__(self, config: BGANConfig, encoder: Encoder, graph: NeighbourGraph,
                 features_input: bool, rank1_logs: bool = False, **kwargs):
        super().__init__(name="bgan", **kwargs)
        self.config = config
        self.encoder = encoder
        self.features_input = bool(features_input)
        self.rank1_logs = rank1_logs  # MultiWorkerMirrored + Keras 3 fit crash on scalar logs (tensorflow#72388)
        self.num_items = graph.num_items
        self.graph_keys = tf.constant(graph.keys, tf.int64)
        if config.use_gan:
            self.generator = build_generator(config)
            self.discriminator = build_discriminator(config)
        else:
            self.generator = None
            self.discriminator = None
        self.trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}

    # -- building ------------------------------------------------------------
    def build_all(self, x_example: np.ndarray) -> None:
        """Create every weight with one forward pass (Model.build(shape) would
        not create sub-model weights)."""
        x = tf.convert_to_tensor(x_example[:2])
        z = self.encoder.encode_cached(x) if self.features_input else self.encoder(x)
        if self.generator is not None:
            img = self.generator(z)
            self.discriminator(img)
        self.built = True

    def compile(self, e_optimizer, g_optimizer=None, d_optimizer=None, **kwargs):
        super().compile(**kwargs)
        self.e_optimizer = e_optimizer
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def build_optimizers(self) -> None:
        """Create optimizer slots up front (under tf.distribute, inside the
        strategy scope, or fit fails with "You must feed a value for placeholder")."""
        self.e_optimizer.build(self.encoder.trainable_variables)
        if self.generator is not None:
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # build_all() and build_optimizers() already created every weight. Keras'
        # symbolic build would peek at a batch and strategy.reduce() the dict of
        # PerReplica values, which MultiWorkerMirroredStrategy cannot do (fit fails with
        # "Attempt to convert a value ({'image': PerReplica..." -- keras-team/keras#20329).
        if self.built:
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -- one step --------------------------------------------------------------
    def call(self, x, training=False):
        return self.encoder.encode_cached(x, training=training) if self.features_input else self.encoder(x, training=training)

    def _prior_codes(self, batch):
        """Released-code fakes: G fed Gaussian noise. Stateless and seeded by
        (seed, step, replica), so runs are repeatable and resumable."""
        ctx = _replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        step = tf.cast(self.e_optimizer.iterations, tf.int64)
        seed = tf.stack([tf.constant(self.config.seed, tf.int64), step * replicas + tf.cast(replica, tf.int64)])
        return tf.random.stateless_normal((batch, self.encoder.num_bits), seed=seed)

    def train_step(self, data):
        cfg = self.config
        image, x, index = data["image"], data["x"], data["index"]
        b = tf.shape(image)[0]
        ctx = _replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        g_batch = b * replicas
        enc_vars = self.encoder.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            z = self(x, training=True)
            z_all = _gather(z)
            idx_all = _gather(index)
            s_block = block_lookup(self.graph_keys, self.num_items, index, idx_all)
            same = tf.equal(index[:, None], idx_all[None, :])
            nbr = losses.neighbourhood_loss(z, z_all, s_block, same, cfg.nbr_form)
            quant = losses.quantization_loss(z, g_batch)
            zero = tf.constant(0.0)
            pixel = feature = adv_g = loss_d = zero
            if self.generator is not None:
                recon = self.generator(z, training=True)
                real_logit, phi_real = self.discriminator(image, training=True)
                rec_logit, phi_rec = self.discriminator(recon, training=True)
                if cfg.w_pixel:
                    pixel = losses.pixel_loss(image, recon, g_batch)
                if cfg.w_feature:
                    feature = losses.feature_loss(phi_real, phi_rec, cfg.image_size * cfg.image_size * 3, g_batch)
                fake_logits = []
                if cfg.fake_source in ("codes", "both"):
                    fake_logits.append(rec_logit)
                if cfg.fake_source in ("prior", "both"):
                    prior_img = self.generator(self._prior_codes(b), training=True)
                    fake_logits.append(self.discriminator(prior_img, training=True)[0])
                share = 1.0 / len(fake_logits)
                adv_g = share * tf.add_n([losses.generator_adv_loss(f, g_batch) for f in fake_logits])
                loss_d = share * tf.add_n([losses.discriminator_loss(real_logit, f, g_batch) for f in fake_logits])
            content = cfg.w_pixel * pixel + cfg.w_feature * feature
            loss_g = content + cfg.w_adv * adv_g
            # The encoder always learns from the neighbourhood, quantization and
            # content terms; the adversarial term reaches it only on request
            # (measured on digits: it drowns the neighbourhood signal).
            loss_e = cfg.w_nbr * nbr + cfg.w_quant * quant + content
            if cfg.adv_to_encoder:
                loss_e = loss_e + cfg.w_adv * adv_g
            # Under mixed precision the optimizers are LossScaleOptimizers: scale
            # inside the tape, and apply_gradients unscales (a no-op otherwise).
            scaled_e = self.e_optimizer.scale_loss(loss_e)
            if self.generator is not None:
                scaled_g = self.g_optimizer.scale_loss(loss_g)
                scaled_d = self.d_optimizer.scale_loss(loss_d)
        e_grads = tape.gradient(scaled_e, enc_vars)
        self.e_optimizer.apply_gradients(zip(e_grads, enc_vars))
        if self.generator is not None:
            g_vars = self.generator.trainable_variables
            d_vars = self.discriminator.trainable_variables
            g_grads = tape.gradient(scaled_g, g_vars)
            d_grads = tape.gradient(scaled_d, d_vars)
            self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
            self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        del tape
        values = dict(loss_e=loss_e, nbr=nbr, quant=quant, pixel=pixel, feature=feature, adv_g=adv_g, loss_d=loss_d)
        logs = {}
        for name, v in values.items():
            total = _sum_over_replicas(tf.cast(v, tf.float32))
            self.trackers[name].update_state(total)
            logs[name] = self.trackers[name].result()
        if self.rank1_logs:
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs
