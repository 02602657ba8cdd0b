"""BGAN's three networks as Keras 3 subclassed models.

- ``Encoder``: preprocessing + backbone + hash head (MLP, Dense(L)) + sign.
  ``call(images)`` maps [0,255] RGB images to codes; ``encode_features``
  maps cached backbone features to codes, so a frozen backbone is not rerun
  every epoch while the exported encoder still takes images. With
  ``trainable_from`` the backbone is split at that layer: a frozen bottom whose
  activations are cached, and a trained top; ``encode_bottom`` maps cached
  bottom activations to codes (top + head + sign).
- ``Generator``: code -> image in [0, 1] (transposed 5x5 convs, BN + ELU, as
  the released code; widths configurable).
- ``Discriminator``: image -> (logit, phi), phi being the 1024-d feature layer
  the content loss compares.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from bgan_tf.modeling.backbones import BackboneSpec, Preprocess, build_backbone, freeze_bottom, split_backbone
from bgan_tf.modeling.sign import SignActivation


def _batch_norm(sync: bool, name: str) -> keras.layers.BatchNormalization:
    # synchronized=True all-reduces batch statistics across replicas, so a
    # mirrored step sees the same statistics as a one-device step.
    # momentum 0.9 so moving statistics keep up in runs of a few hundred steps
    # (reconstruction samples and exports run in inference mode).
    return keras.layers.BatchNormalization(synchronized=sync, momentum=0.9, name=name)


class Encoder(keras.Model):
    def __init__(
        self,
        backbone: BackboneSpec,
        num_bits: int,
        hidden: tuple[int, ...] = (),
        sign_mode: str = "tanh",
        ste_surrogate: str = "tanh",
        beta: float = 1.0,
        freeze_backbone: bool = False,
        hash_norm: bool = False,
        build_backbone_net: bool = True,
        trainable_from: str = "",
        top_bn: str = "frozen",
        name: str = "encoder",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.spec = backbone
        self.num_bits = int(num_bits)
        self.hidden = tuple(int(h) for h in hidden)
        self.freeze_backbone = bool(freeze_backbone)
        self.preprocess = Preprocess(backbone.input_size, backbone.normalisation, name="preprocess")
        self.backbone = build_backbone(backbone) if build_backbone_net else None
        self.trainable_from = trainable_from or ""
        self.top_bn = top_bn
        split = None
        if self.backbone is not None and self.trainable_from:
            split = split_backbone(self.backbone, self.trainable_from)
            freeze_bottom(*split, top_bn)
        elif self.backbone is not None and self.freeze_backbone:
            self.backbone.trainable = False
        # Views of self.backbone's own layers, kept out of Keras' tracking: the weights
        # live (and are saved) once, in self.backbone, as for an unsplit encoder.
        object.__setattr__(self, "_split", split)
        self.head_layers = []
        for i, h in enumerate(self.hidden):
            self.head_layers.append(keras.layers.Dense(h, name=f"head_dense{i}"))
            self.head_layers.append(keras.layers.ReLU(name=f"head_relu{i}"))
        self.hash_dense = keras.layers.Dense(self.num_bits, name="hash_dense")
        # Batch-normalising the pre-sign values keeps them where the surrogate
        # has a gradient: with "app" (clip) a unit whose |beta x| starts above 1
        # never moves again, and at 12 bits on CIFAR features every unit did
        # (mAP 0.10, chance) until this was on.
        self.hash_bn = keras.layers.BatchNormalization(momentum=0.9, name="hash_bn") if hash_norm else None
        self.sign = SignActivation(sign_mode, ste_surrogate, beta, name="sign", dtype="float32")

    def features(self, images, training=False):
        """[0,255] images of any size -> backbone features."""
        x = self.preprocess(images)
        # A frozen backbone always runs in inference mode (BN uses its moving
        # statistics), the standard fine-tuning rule for pretrained nets.
        # A split backbone's bottom layers are non-trainable, which keeps their BN in
        # inference mode even when training is passed down.
        bb_training = training and (not self.freeze_backbone or bool(self.trainable_from))
        return self.backbone(x, training=bb_training)

    def bottom_activations(self, images):
        """[0,255] images -> the frozen bottom's activations (what the cache stores)."""
        return self._split[0](self.preprocess(images), training=False)

    def encode_bottom(self, activations, training=False):
        """Cached bottom activations (float16 or float32) -> codes through top + head + sign."""
        if self._split is None:
            raise ValueError("encode_bottom needs an encoder built with trainable_from")
        feats = self._split[1](tf.cast(activations, "float32"), training=training)
        return self.encode_features(feats, training=training)

    def encode_cached(self, x, training=False):
        """What training feeds when the backbone is (partly) cached: bottom activations
        with trainable_from, the pooled features of a frozen backbone otherwise."""
        if self._split is not None:
            return self.encode_bottom(x, training=training)
        return self.encode_features(x, training=training)

    def pre_sign(self, features, training=False):
        x = features
        for layer in self.head_layers:
            x = layer(x, training=training)
        x = self.hash_dense(x)
        return self.hash_bn(x, training=training) if self.hash_bn is not None else x

    def encode_features(self, features, training=False):
        """Cached backbone features -> codes (surrogate when training, +-1 otherwise)."""
        return self.sign(self.pre_sign(features, training=training), training=training)

    def call(self, images, training=False):
        return self.encode_features(self.features(images, training=training), training=training)

    @property
    def beta(self):
        return self.sign.beta


class Generator(keras.Model):
    """code [N, L] -> image [N, S, S, 3] in [0, 1]."""

    def __init__(self, image_size: int = 32, channels: tuple[int, ...] = (256, 256, 128),
                 sync_batch_norm: bool = False, name: str = "generator", **kwargs):
        super().__init__(name=name, **kwargs)
        channels = tuple(int(c) for c in channels)
        ups = len(channels) - 1
        start = image_size // (2 ** ups)
        if start < 1 or start * 2 ** ups != image_size:
            raise ValueError(f"image_size {image_size} is not reachable with {ups} 2x upsamplings")
        self.image_size = image_size
        self.start = start
        self.channels = channels
        self.fc = keras.layers.Dense(start * start * channels[0], use_bias=False, name="fc")
        self.fc_bn = _batch_norm(sync_batch_norm, "fc_bn")
        self.deconvs = []
        self.bns = []
        for i, c in enumerate(channels[1:]):
            self.deconvs.append(keras.layers.Conv2DTranspose(c, 5, strides=2, padding="same", use_bias=False,
                                                             name=f"deconv{i}"))
            self.bns.append(_batch_norm(sync_batch_norm, f"bn{i}"))
        self.to_rgb = keras.layers.Conv2D(3, 1, name="to_rgb")
        self.out_act = keras.layers.Activation("sigmoid", dtype="float32", name="sigmoid")

    def call(self, codes, training=False):
        x = self.fc(codes)
        x = keras.activations.elu(self.fc_bn(x, training=training))
        x = tf.reshape(x, (-1, self.start, self.start, self.channels[0]))
        for deconv, bn in zip(self.deconvs, self.bns):
            x = keras.activations.elu(bn(deconv(x), training=training))
        return self.out_act(self.to_rgb(x))


class Discriminator(keras.Model):
    """image [N, S, S, 3] in [0, 1] -> (logit [N, 1], phi [N, F]).

    ``spectral_norm``: every conv and dense layer is wrapped in
    ``keras.layers.SpectralNormalization`` (each training call divides its kernel by
    a power-iteration estimate of its largest singular value), which bounds D's
    Lipschitz constant so it cannot sharpen without limit against G. D's batch norm
    is then off: it would rescale the activations SN bounds (SN-GAN's D has none).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 128, 256, 256), feature_dim: int = 1024,
                 sync_batch_norm: bool = False, spectral_norm: bool = False, name: str = "discriminator",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.spectral_norm = bool(spectral_norm)

        def wrap(layer):
            # dtype: the wrapper casts its output to its input dtype, so the float32 logit stays float32.
            return keras.layers.SpectralNormalization(layer, dtype=layer.dtype_policy, name=f"sn_{layer.name}") \
                if self.spectral_norm else layer

        self.convs = []
        self.bns = []
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2  # released code: 32 s1, then stride 2
            self.convs.append(wrap(keras.layers.Conv2D(int(c), 5, strides=stride, padding="same", name=f"conv{i}")))
            # No BN on the first layer (DCGAN practice: keeps the input scale).
            self.bns.append(None if i == 0 or self.spectral_norm else _batch_norm(sync_batch_norm, f"bn{i}"))
        self.flatten = keras.layers.Flatten(name="flatten")
        self.feature = wrap(keras.layers.Dense(int(feature_dim), name="phi"))
        self.logit = wrap(keras.layers.Dense(1, dtype="float32", name="logit"))

    def call(self, images, training=False):
        x = images * 2.0 - 1.0
        for conv, bn in zip(self.convs, self.bns):
            x = conv(x, training=training)  # SN updates its estimate in training calls only
            if bn is not None:
                x = bn(x, training=training)
            x = keras.activations.elu(x)
        phi = keras.activations.elu(self.feature(self.flatten(x), training=training))
        return self.logit(phi, training=training), tf.cast(phi, "float32")
