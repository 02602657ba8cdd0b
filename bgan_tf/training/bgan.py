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

The remedies against a dominant D (docs/METHOD.md) are config knobs: gan_loss,
disc_spectral_norm (networks.Discriminator), d_label_smoothing, instance_noise
(Gaussian noise on every image D sees, its std falling linearly to 0 over the
run) and g_steps (extra generator updates per step). Their defaults train
exactly as before.

w_perceptual adds a content term on a frozen copy of the pretrained backbone
(``self.perceptual``, never trained or saved: it is rebuilt from the backbone weights):
1 - cos of its pooled features of the real image and of G(code). Like the other
content terms it trains G and, through the code, the encoder.

content_to_encoder scales the content gradient the encoder gets (G's is whole), and
content_warmup_epochs holds it back from the encoder for the run's first epochs (the gate is a function of the encoder optimizer's step
count, which checkpoints keep, so a resumed run gates the same steps).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bgan_tf.training import losses
from bgan_tf.config import BGANConfig
from bgan_tf.training.graph import NeighbourGraph, block_lookup
from bgan_tf.modeling.factory import build_discriminator, build_generator, build_perceptual_net
from bgan_tf.modeling.networks import Encoder

LOSS_NAMES = ("loss_e", "loss_g", "nbr", "quant", "pixel", "feature", "adv_g", "loss_d")
CONSISTENCY_NAME = "consistency"  # logged when w_consistency > 0
PERCEPTUAL_NAME = "perceptual"  # logged when w_perceptual > 0
ACCURACY_NAMES = ("d_acc_real", "d_acc_recon", "d_acc_prior")
NOISE_STD_NAME = "d_noise_std"
# Seed streams of the per-step stateless draws: prior codes use the config seed itself
# (as before), instance noise these offsets (config seeds are < 2**31, so none collide).
_NOISE_STREAMS = (2**31, 2**32)
MONITOR_BATCH = 16  # prior fakes per replica and step judged only for d_acc_prior


def instance_noise_std(initial: float, step, total_steps: int) -> tf.Tensor:
    """The instance-noise std at ``step``: ``initial`` falling linearly to 0 at
    ``total_steps`` and 0 after (late training sees the clean images)."""
    frac = 1.0 - tf.cast(step, tf.float32) / float(max(int(total_steps), 1))
    return tf.constant(float(initial), tf.float32) * tf.maximum(frac, 0.0)


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
        self.perceptual = build_perceptual_net(config) if config.use_gan and config.w_perceptual else None
        names = LOSS_NAMES + ((CONSISTENCY_NAME,) if config.w_consistency else ()) + (
            (PERCEPTUAL_NAME,) if self.perceptual is not None else ())
        if config.use_gan:
            names += ACCURACY_NAMES + ((NOISE_STD_NAME,) if config.instance_noise else ())
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.run_steps = 0  # steps of the whole run (set_run_length): the instance-noise schedule's length
        self.content_warmup_steps = 0  # steps before the content gradient reaches the encoder

    def set_run_length(self, steps: int, steps_per_epoch: int | None = None) -> None:
        """Total training steps of the run (epochs x steps per epoch), and the steps of one
        epoch (which content_warmup_epochs counts in), before fit()."""
        self.run_steps = int(steps)
        if steps_per_epoch is not None:
            self.content_warmup_steps = self.config.content_warmup_epochs * int(steps_per_epoch)
        elif self.config.content_warmup_epochs:
            raise ValueError("content_warmup_epochs counts epochs: pass steps_per_epoch to set_run_length")

    def _content_warmup_gate(self) -> tf.Tensor:
        """1.0 once the content warm-up is over (always without one), else 0.0."""
        if not self.config.content_warmup_epochs:
            return tf.constant(1.0)
        if self.content_warmup_steps < 1:
            raise ValueError("content_warmup_epochs needs the epoch length: call "
                             "set_run_length(steps, steps_per_epoch) before fit()")
        done = tf.cast(self.e_optimizer.iterations, tf.int64)
        return tf.cast(done >= self.content_warmup_steps, tf.float32)

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

    def compile(self, e_optimizer, g_optimizer=None, d_optimizer=None, backbone_optimizer=None, **kwargs):
        """One optimizer per network; ``backbone_optimizer`` (optional) takes the encoder's
        backbone weights at their own rate, ``e_optimizer`` the rest of the encoder."""
        super().compile(**kwargs)
        self.e_optimizer = e_optimizer
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.backbone_optimizer = backbone_optimizer

    def _encoder_variable_groups(self) -> list[tuple[keras.optimizers.Optimizer, list]]:
        """(optimizer, variables) pairs that together update every trainable encoder weight."""
        enc_vars = self.encoder.trainable_variables
        if self.backbone_optimizer is None or self.encoder.backbone is None:
            return [(self.e_optimizer, enc_vars)]
        backbone_ids = {id(v) for v in self.encoder.backbone.trainable_variables}
        return [(self.e_optimizer, [v for v in enc_vars if id(v) not in backbone_ids]),
                (self.backbone_optimizer, [v for v in enc_vars if id(v) in backbone_ids])]

    def build_optimizers(self) -> None:
        """Create optimizer slots up front (under tf.distribute, inside the
        strategy scope, or fit fails with "You must feed a value for placeholder")."""
        for optimizer, variables in self._encoder_variable_groups():
            optimizer.build(variables)
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

    def _instance_noise(self, image):
        """(noise for real images and their reconstructions, noise for prior fakes) and
        its std, or None when instance noise is off."""
        cfg = self.config
        if not cfg.instance_noise:
            return None
        total = cfg.instance_noise_steps or self.run_steps
        if total < 1:
            raise ValueError("instance noise anneals over the run: call set_run_length(steps) before fit()")
        std = instance_noise_std(cfg.instance_noise, self.e_optimizer.iterations, total)
        draws = [std * tf.random.stateless_normal(tf.shape(image), seed=self._step_seed(o), dtype=image.dtype)
                 for o in _NOISE_STREAMS]
        return draws[0], draws[1], std

    def _judge(self, images, noise):
        return self.discriminator(images if noise is None else images + noise, training=True)

    def _gan_pass(self, z, image, prior_codes, noise):
        """G(code) and D's view of the real images, G(code) and, when D trains on
        them, G(prior). A reconstruction gets its original's noise, so their D
        features differ only by what differs in the images (the content loss)."""
        real_noise, prior_noise = (noise[0], noise[1]) if noise is not None else (None, None)
        recon = self.generator(z, training=True)
        real_logit, phi_real = self._judge(image, real_noise)
        rec_logit, phi_rec = self._judge(recon, real_noise)
        prior_logit = None
        if self.config.fake_source in ("prior", "both"):
            prior_logit = self._judge(self.generator(prior_codes, training=True), prior_noise)[0]
        return recon, real_logit, phi_real, rec_logit, phi_rec, prior_logit

    def _fakes(self, rec_logit, prior_logit) -> list:
        """The fakes D trains on (fake_source)."""
        return [f for f, use in ((rec_logit, self.config.fake_source in ("codes", "both")),
                                 (prior_logit, prior_logit is not None)) if use]

    def _generator_terms(self, image, recon, phi_real, phi_rec, fakes, g_batch):
        """(pixel, feature, perceptual, adv_g) terms of G's loss (0 for a term whose weight is 0)."""
        cfg = self.config
        pixel = feature = perceptual = tf.constant(0.0)
        if cfg.w_pixel:
            pixel = losses.pixel_loss(image, recon, g_batch)
        if cfg.w_feature:
            feature = losses.feature_loss(phi_real, phi_rec, cfg.image_size * cfg.image_size * 3, g_batch)
        if self.perceptual is not None:
            # One pass over both halves; the real half is a fixed target (stop_gradient in the loss).
            b = tf.shape(image)[0]
            f = self.perceptual(tf.concat([image, tf.cast(recon, image.dtype)], 0) * 255.0, training=False)
            perceptual = losses.perceptual_loss(f[:b], f[b:], g_batch)
        adv_g = (1.0 / len(fakes)) * tf.add_n([losses.generator_adv_loss(f, g_batch, cfg.gan_loss) for f in fakes])
        return pixel, feature, perceptual, adv_g

    def _content(self, pixel, feature, perceptual):
        cfg = self.config
        return cfg.w_pixel * pixel + cfg.w_feature * feature + cfg.w_perceptual * perceptual

    def _generator_step(self, z, image, prior_codes, noise, g_batch) -> None:
        """One more generator update on this batch against the current D (g_steps > 1)."""
        cfg = self.config
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            recon, _, phi_real, rec_logit, phi_rec, prior_logit = self._gan_pass(z, image, prior_codes, noise)
            pixel, feature, perceptual, adv_g = self._generator_terms(image, recon, phi_real, phi_rec,
                                                                      self._fakes(rec_logit, prior_logit), g_batch)
            scaled = self.g_optimizer.scale_loss(self._content(pixel, feature, perceptual) + cfg.w_adv * adv_g)
        self.g_optimizer.apply_gradients(zip(tape.gradient(scaled, g_vars), g_vars))

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

    def train_step(self, data):
        cfg = self.config
        image, x, index = data["image"], data["x"], data["index"]
        b = tf.shape(image)[0]
        ctx = _replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        g_batch = b * replicas
        enc_groups = self._encoder_variable_groups()
        gan = self.generator is not None
        # Drawn before any update moves the step counter.
        prior_codes = self._prior_codes(b) if gan else None
        noise = self._instance_noise(image) if gan else None
        content_gate = self._content_warmup_gate()
        counts = {}
        with tf.GradientTape(persistent=True) as tape:
            if cfg.w_consistency:
                # Both views in one pass: trained batch norms see one batch of both.
                z_pair = self(tf.concat([x, data["x_other"]], 0), training=True)
                z, z_other = z_pair[:b], z_pair[b:]
            else:
                z = self(x, training=True)
            z_all = _gather(z)
            idx_all = _gather(index)
            s_block = block_lookup(self.graph_keys, self.num_items, index, idx_all)
            same = tf.equal(index[:, None], idx_all[None, :])
            nbr = losses.neighbourhood_loss(z, z_all, s_block, same, cfg.nbr_form)
            quant = losses.quantization_loss(z, g_batch)
            zero = tf.constant(0.0)
            pixel = feature = perceptual = adv_g = loss_d = zero
            if gan:
                recon, real_logit, phi_real, rec_logit, phi_rec, prior_logit = self._gan_pass(
                    z, image, prior_codes, noise)
                fakes = self._fakes(rec_logit, prior_logit)
                pixel, feature, perceptual, adv_g = self._generator_terms(image, recon, phi_real, phi_rec, fakes,
                                                                          g_batch)
                real_target = 1.0 - cfg.d_label_smoothing
                loss_d = (1.0 / len(fakes)) * tf.add_n(
                    [losses.discriminator_loss(real_logit, f, g_batch, cfg.gan_loss, real_target) for f in fakes])
                with tape.stop_recording():
                    seen = tf.cast(b, tf.float32)
                    counts = {"d_acc_real": (losses.judged_right(real_logit, real=True), seen),
                              "d_acc_recon": (losses.judged_right(rec_logit, real=False), seen),
                              "d_acc_prior": self._prior_judged_fake(prior_codes, prior_logit)}
            content = self._content(pixel, feature, perceptual)
            loss_g = content + cfg.w_adv * adv_g
            # The encoder always learns from the neighbourhood, quantization and
            # content terms; the adversarial term reaches it only on request
            # (measured on digits: it drowns the neighbourhood signal).
            # (content_gate: 0 during the content warm-up, when G learns to decode first;
            # content_to_encoder: the encoder's share of the content gradient.)
            loss_e = cfg.w_nbr * nbr + cfg.w_quant * quant + content * (content_gate * cfg.content_to_encoder)
            if cfg.w_consistency:
                consistency = losses.consistency_loss(z, z_other, g_batch)
                loss_e = loss_e + cfg.w_consistency * consistency
            if cfg.adv_to_encoder:
                loss_e = loss_e + cfg.w_adv * adv_g
            # Under mixed precision the optimizers are LossScaleOptimizers: scale
            # inside the tape, and apply_gradients unscales (a no-op otherwise).
            # (Each encoder optimizer scales by its own factor.)
            scaled_e = [opt.scale_loss(loss_e) for opt, _ in enc_groups]
            if gan:
                scaled_g = self.g_optimizer.scale_loss(loss_g)
                scaled_d = self.d_optimizer.scale_loss(loss_d)
        e_grads = [tape.gradient(scaled, variables) for (_, variables), scaled in zip(enc_groups, scaled_e)]
        for (optimizer, variables), grads in zip(enc_groups, e_grads):
            optimizer.apply_gradients(zip(grads, variables))
        if gan:
            g_vars = self.generator.trainable_variables
            d_vars = self.discriminator.trainable_variables
            g_grads = tape.gradient(scaled_g, g_vars)
            d_grads = tape.gradient(scaled_d, d_vars)
            self.g_optimizer.apply_gradients(zip(g_grads, g_vars))
            self.d_optimizer.apply_gradients(zip(d_grads, d_vars))
        del tape
        if gan:
            for _ in range(cfg.g_steps - 1):  # unrolled: no collective inside a tf.cond
                self._generator_step(tf.stop_gradient(z), image, prior_codes, noise, g_batch)
        values = dict(loss_e=loss_e, loss_g=loss_g, nbr=nbr, quant=quant, pixel=pixel, feature=feature,
                      adv_g=adv_g, loss_d=loss_d)
        if cfg.w_consistency:
            values[CONSISTENCY_NAME] = consistency
        if self.perceptual is not None:
            values[PERCEPTUAL_NAME] = perceptual
        logs = {}
        for name, v in values.items():
            total = _sum_over_replicas(tf.cast(v, tf.float32))
            self.trackers[name].update_state(total)
            logs[name] = self.trackers[name].result()
        for name, (right, seen) in counts.items():  # the global batch's fraction
            self.trackers[name].update_state(_sum_over_replicas(right) / _sum_over_replicas(seen))
            logs[name] = self.trackers[name].result()
        if noise is not None:
            self.trackers[NOISE_STD_NAME].update_state(noise[2])
            logs[NOISE_STD_NAME] = self.trackers[NOISE_STD_NAME].result()
        if self.rank1_logs:
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs
