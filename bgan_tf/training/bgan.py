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

Besides the loss terms, every step logs each network's total loss (loss_e,
loss_g, loss_d) and D's accuracy (logit > 0 counts as "real"): on the real
images (d_acc_real), on G(code) (d_acc_recon) and on G(prior noise)
(d_acc_prior), the fraction judged fake for the last two. Counts are summed over
replicas, so the numbers are the global batch's. When D does not train on prior
fakes (fake_source=codes), d_acc_prior is D's inference-mode verdict on a few of
G's inference-mode prior images per step (`_prior_judged_fake`): no network state
moves, so training follows the same path (its floats may differ in the last bits,
as the extra pass changes how TensorFlow schedules the graph).

Without G and D (use_gan off) the step trains the encoder alone and logs only its
terms (loss_e, nbr, quant): no GAN metric sits at zero in the progress bar.
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

ENCODER_NAMES = ("loss_e", "nbr", "quant")  # logged by every run
GAN_NAMES = ("loss_g", "pixel", "feature", "adv_g", "loss_d")  # logged when G and D train
CONSISTENCY_NAME = "consistency"  # logged when w_consistency > 0
ACCURACY_NAMES = ("d_acc_real", "d_acc_recon", "d_acc_prior")
MONITOR_BATCH = 16  # prior fakes per replica and step judged only for d_acc_prior


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
        names = ENCODER_NAMES + ((CONSISTENCY_NAME,) if config.w_consistency else ())
        if config.use_gan:
            names += GAN_NAMES + ACCURACY_NAMES
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

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
        """One optimizer per network (keras-io's GAN example)."""
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

    def _step_seed(self, offset: int = 0) -> tf.Tensor:
        """Seed of this step's draws on this replica: (seed + offset, step, replica), so
        runs are repeatable and resumable."""
        ctx = _replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        step = tf.cast(self.e_optimizer.iterations, tf.int64)
        return tf.stack([tf.constant(self.config.seed + offset, tf.int64),
                         step * replicas + tf.cast(replica, tf.int64)])

    def _prior_codes(self, batch):
        """Released-code fakes: G fed Gaussian noise."""
        return tf.random.stateless_normal((batch, self.encoder.num_bits), seed=self._step_seed())

    def _encode(self, data, b):
        """(z, z of the mirrored view or None). Both views go in one pass, so trained batch
        norms see one batch of both."""
        if not self.config.w_consistency:
            return self(data["x"], training=True), None
        z_pair = self(tf.concat([data["x"], data["x_other"]], 0), training=True)
        return z_pair[:b], z_pair[b:]

    def _encoder_terms(self, z, z_other, index, g_batch) -> dict:
        """nbr, quant (and consistency) terms of the encoder's loss."""
        cfg = self.config
        idx_all = _gather(index)
        s_block = block_lookup(self.graph_keys, self.num_items, index, idx_all)
        same = tf.equal(index[:, None], idx_all[None, :])
        terms = dict(nbr=losses.neighbourhood_loss(z, _gather(z), s_block, same, cfg.nbr_form),
                     quant=losses.quantization_loss(z, g_batch))
        if z_other is not None:
            terms[CONSISTENCY_NAME] = losses.consistency_loss(z, z_other, g_batch)
        return terms

    def _gan_terms(self, z, image, prior_codes, g_batch) -> tuple[dict, tuple]:
        """(G's and D's loss terms, D's logits on real, G(code), G(prior) or None). D's fakes are G(code), G(prior) or
        both (fake_source); the content terms compare G(code) with its image."""
        cfg = self.config
        recon = self.generator(z, training=True)
        real_logit, phi_real = self.discriminator(image, training=True)
        rec_logit, phi_rec = self.discriminator(recon, training=True)
        prior_logit = None
        if cfg.fake_source in ("prior", "both"):
            prior_logit = self.discriminator(self.generator(prior_codes, training=True), training=True)[0]
        fakes = [f for f, use in ((rec_logit, cfg.fake_source in ("codes", "both")),
                                  (prior_logit, prior_logit is not None)) if use]
        zero = tf.constant(0.0)
        pixel = losses.pixel_loss(image, recon, g_batch) if cfg.w_pixel else zero
        feature = losses.feature_loss(phi_real, phi_rec, cfg.image_size ** 2 * 3, g_batch) if cfg.w_feature else zero
        adv_g = (1.0 / len(fakes)) * tf.add_n([losses.generator_adv_loss(f, g_batch) for f in fakes])
        loss_d = (1.0 / len(fakes)) * tf.add_n([losses.discriminator_loss(real_logit, f, g_batch) for f in fakes])
        return dict(pixel=pixel, feature=feature, adv_g=adv_g, loss_d=loss_d), (real_logit, rec_logit, prior_logit)

    def _judged(self, prior_codes, real_logit, rec_logit, prior_logit) -> dict:
        """name -> (images D judged right, images judged), for D's accuracies."""
        seen = tf.cast(tf.shape(real_logit)[0], tf.float32)
        return {"d_acc_real": (losses.judged_right(real_logit, real=True), seen),
                "d_acc_recon": (losses.judged_right(rec_logit, real=False), seen),
                "d_acc_prior": self._prior_judged_fake(prior_codes, prior_logit)}

    def _prior_judged_fake(self, prior_codes, prior_logit):
        """(prior fakes D calls fake, prior fakes judged). Without prior fakes in
        training (fake_source=codes) this is an extra pass, so it judges the first
        MONITOR_BATCH codes only, with G and D in inference mode: neither's batch-norm
        statistics nor D's spectral-norm estimate move, so the measurement leaves
        training as it was (and replicas, which draw different codes, stay in step)."""
        if prior_logit is None:
            codes = prior_codes[:MONITOR_BATCH]
            prior_logit = self.discriminator(self.generator(codes, training=False), training=False)[0]
        return losses.judged_right(prior_logit, real=False), tf.cast(tf.shape(prior_logit)[0], tf.float32)

    def _apply(self, tape, optimizer, scaled_loss, variables) -> None:
        optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))

    def _log(self, values: dict, counts: dict) -> dict:
        """Each tracker's running mean: loss terms summed over replicas, accuracies as the
        global batch's fraction."""
        logs = {}
        for name, v in values.items():
            self.trackers[name].update_state(_sum_over_replicas(tf.cast(v, tf.float32)))
            logs[name] = self.trackers[name].result()
        for name, (right, seen) in counts.items():
            self.trackers[name].update_state(_sum_over_replicas(right) / _sum_over_replicas(seen))
            logs[name] = self.trackers[name].result()
        if self.rank1_logs:
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def train_step(self, data):
        cfg = self.config
        image, index = data["image"], data["index"]
        b = tf.shape(image)[0]
        ctx = _replica_context()
        g_batch = b * (ctx.num_replicas_in_sync if ctx is not None else 1)
        gan = self.generator is not None
        prior_codes = self._prior_codes(b) if gan else None  # drawn before any update moves the step counter
        counts = {}
        with tf.GradientTape(persistent=True) as tape:
            z, z_other = self._encode(data, b)
            values = self._encoder_terms(z, z_other, index, g_batch)
            loss_e = cfg.w_nbr * values["nbr"] + cfg.w_quant * values["quant"] + \
                cfg.w_consistency * values.get(CONSISTENCY_NAME, 0.0)
            if gan:
                gan_values, logits = self._gan_terms(z, image, prior_codes, g_batch)
                values.update(gan_values)
                content = cfg.w_pixel * values["pixel"] + cfg.w_feature * values["feature"]
                values["loss_g"] = content + cfg.w_adv * values["adv_g"]
                # The encoder learns from the content terms through its code, never from the
                # adversarial one (measured on digits: it drowns the neighbourhood signal).
                loss_e = loss_e + content
            values["loss_e"] = loss_e
            # Under mixed precision the optimizers are LossScaleOptimizers: scale inside the
            # tape, and apply_gradients unscales (a no-op otherwise).
            scaled_e = self.e_optimizer.scale_loss(loss_e)
            if gan:
                scaled_g = self.g_optimizer.scale_loss(values["loss_g"])
                scaled_d = self.d_optimizer.scale_loss(values["loss_d"])
        if gan:  # outside the tape (nothing to differentiate), before any update
            counts = self._judged(prior_codes, *logits)
        self._apply(tape, self.e_optimizer, scaled_e, self.encoder.trainable_variables)
        if gan:
            self._apply(tape, self.g_optimizer, scaled_g, self.generator.trainable_variables)
            self._apply(tape, self.d_optimizer, scaled_d, self.discriminator.trainable_variables)
        del tape
        return self._log(values, counts)
