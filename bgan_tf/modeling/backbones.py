"""Backbones for the encoder, with their preprocessing inside the graph.

Every backbone takes float32 RGB images with values in [0, 255] of any size
and returns a pooled feature vector. Resizing and normalisation are Keras
layers (``Preprocess``), so training, the exported SavedModel and TFLite all
see exactly the same transform.

Names:
- ``small_cnn``: a small conv net trained from scratch (no weights needed).
- ``mobilenet_v2_torch``: Keras MobileNetV2 rewired to pad its stride-2 layers
  like torch (1 px each side), for torchvision-trained ImageNet weights
  converted to Keras (the README's CIFAR-10 section). Keras' own graph pads
  0/1 and shifts every stride-2 grid by a pixel, which costs these weights
  about 5 mAP points on CIFAR-10. Input normalised with the ImageNet mean/std.
- any ``keras.applications`` model name (``ResNet50``, ``EfficientNetB0``,
  ...), normalised with that application's own ``preprocess_input``.

``split_backbone`` cuts a built backbone at a layer into a frozen bottom and a
trainable top (partial fine-tuning on cached bottom activations).
"""

from __future__ import annotations

import dataclasses
import importlib
import os

import keras
import tensorflow as tf

from bgan_tf import atomic
from bgan_tf.errors import UserError

TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str = "small_cnn"
    weights: str | None = None  # "imagenet", a file path, or None (random init)
    input_size: int = 32

    def weights_identity(self) -> str:
        """What identifies the weights for cache keys: file content hash or the tag."""
        if self.weights and os.path.isfile(self.weights):
            return "sha256:" + atomic.file_sha256(self.weights)
        return str(self.weights)

    @property
    def normalisation(self) -> str:
        if self.name == "small_cnn":
            return "unit"
        if self.name == "mobilenet_v2_torch":
            return "torch"
        return "keras_app:" + self.name


@keras.saving.register_keras_serializable(package="bgan_tf")
class Preprocess(keras.layers.Layer):
    """[0,255] RGB of any size -> resized (bilinear) and normalised input."""

    def __init__(self, size: int, normalisation: str, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.normalisation = normalisation
        if normalisation.startswith("keras_app:"):
            self._app_preprocess = _keras_app_preprocess(normalisation.split(":", 1)[1])
        elif normalisation not in ("unit", "torch"):
            raise ValueError(f"unknown normalisation {normalisation!r}")

    def call(self, images):
        x = tf.cast(images, "float32")
        shape = tf.shape(x)
        # Resize only when needed: bilinear, no antialias (same as torch's
        # align_corners=False upsampling the torchvision weights expect).
        x = tf.cond(
            tf.logical_and(tf.equal(shape[1], self.size), tf.equal(shape[2], self.size)),
            lambda: x,
            lambda: tf.image.resize(x, (self.size, self.size), method="bilinear"),
        )
        x = tf.ensure_shape(x, (None, self.size, self.size, 3))
        return self.normalise(x)

    def normalise(self, x):
        """The normalisation alone, for float32 images already at ``size``: what the
        backbone sees after the resize (also traced alone into the TFLite feature engine)."""
        if self.normalisation == "unit":
            return x / 255.0
        if self.normalisation == "torch":
            return (x / 255.0 - tf.constant(TORCH_MEAN)) / tf.constant(TORCH_STD)
        return self._app_preprocess(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(size=self.size, normalisation=self.normalisation)
        return cfg


def _keras_app_preprocess(name: str):
    ctor = getattr(keras.applications, name, None)
    if ctor is None:
        raise UserError(f"unknown backbone {name!r}: use small_cnn, mobilenet_v2_torch or a keras.applications model name")
    module = importlib.import_module(ctor.__module__)
    fn = getattr(module, "preprocess_input", None)
    if fn is None:
        raise UserError(f"keras.applications.{name} has no preprocess_input; pick another backbone")
    return fn


def small_cnn(input_size: int, name: str = "small_cnn") -> keras.Model:
    """Conv net trained from scratch: 3 stride-2 stages, global average pool (256-d)."""
    inp = keras.Input((input_size, input_size, 3))
    x = inp
    for i, width in enumerate((64, 128, 256)):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9, not Keras' 0.99: short runs (hundreds of steps) must end
        # with moving statistics that match the weights, or inference-mode
        # codes (what retrieval uses) differ from the training-mode ones.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, x, name=name)


def torch_padded_mobilenet_v2(stock: keras.Model) -> keras.Model:
    """Same layers and weights as ``stock``, but every stride-2 layer pads 1 px
    on all sides (torch semantics), as torchvision-trained weights expect."""

    def clone_fn(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            cfg["padding"] = ((1, 1), (1, 1))
        elif layer.name == "Conv1":
            cfg["padding"] = "valid"
        return layer.__class__.from_config(cfg)

    def call_fn(layer, *args, **kwargs):
        if layer.name == "Conv1":
            args = (keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="Conv1_pad")(args[0]),)
        return layer(*args, **kwargs)

    exact = keras.models.clone_model(stock, clone_function=clone_fn, call_function=call_fn)
    exact.set_weights(stock.get_weights())
    return exact


def _load_app(ctor, weights, input_size):
    try:
        return ctor(include_top=False, weights=weights, pooling="avg", input_shape=(input_size, input_size, 3))
    except (ValueError, OSError) as e:
        raise UserError(f"could not load backbone weights {weights!r}: {str(e).splitlines()[0]}; "
                        "pass --backbone_weights with a readable .weights.h5 file that matches the backbone") from None
    except Exception as e:  # network failures surface as assorted URL errors
        if weights == "imagenet":
            raise UserError("could not download ImageNet weights (no network?); pass --backbone_weights PATH "
                            "to a local .weights.h5 file") from None
        raise


def build_backbone(spec: BackboneSpec) -> keras.Model:
    """Feature extractor for preprocessed images: [N, S, S, 3] -> [N, D]."""
    if spec.weights and spec.weights != "imagenet" and not os.path.isfile(spec.weights):
        raise UserError(f"backbone weights file not found: {spec.weights}; pass an existing .weights.h5 path")
    if spec.name == "small_cnn":
        if spec.weights:
            raise UserError("small_cnn is trained from scratch; drop --backbone_weights or pick a pretrained backbone")
        return small_cnn(spec.input_size)
    if spec.name == "mobilenet_v2_torch":
        stock = _load_app(keras.applications.MobileNetV2, spec.weights, spec.input_size)
        model = torch_padded_mobilenet_v2(stock)
        model.name = "mobilenet_v2_torch"
        return model
    ctor = getattr(keras.applications, spec.name, None)
    if ctor is None or not callable(ctor):
        raise UserError(f"unknown backbone {spec.name!r}: use small_cnn, mobilenet_v2_torch or a keras.applications "
                        "model name such as ResNet50")
    return _load_app(ctor, spec.weights, spec.input_size)


def build_feature_extractor(spec: BackboneSpec) -> keras.Model:
    """Images in [0,255] of any size -> pooled features (preprocessing included)."""
    backbone = build_backbone(spec)
    inp = keras.Input((None, None, 3), dtype="float32", name="images")
    x = Preprocess(spec.input_size, spec.normalisation, name="preprocess")(inp)
    out = backbone(x, training=False)
    return keras.Model(inp, out, name=f"features_{spec.name}")


TOP_BN_MODES = ("frozen", "train")


def _producer(tensor):
    """The layer that made ``tensor`` and the tensors it consumed (none for an input)."""
    layer, node_index, _ = tensor._keras_history
    if isinstance(layer, keras.layers.InputLayer):
        return layer, []
    return layer, list(layer._inbound_nodes[node_index].input_tensors)


def split_backbone(backbone: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    """``backbone`` as ``bottom`` (input -> the tensor feeding ``layer_name``) and ``top``
    (that tensor -> the pooled output), two functional models on the backbone's own
    layers and weights (so ``mobilenet_v2_torch``'s padding is kept and training the top
    trains the backbone). The cut must be one tensor that every path from the input to
    the output crosses: a residual add that skips it is refused."""
    names = [l.name for l in backbone.layers]
    if layer_name not in names or isinstance(backbone.get_layer(layer_name), keras.layers.InputLayer):
        hint = [n for n in names if n.endswith("_expand")][-4:] or names[-6:-1]
        raise UserError(f"--trainable_from {layer_name!r} is not a layer of {backbone.name}: use a layer name "
                        f"such as {', '.join(hint)}")
    layer = backbone.get_layer(layer_name)
    # Keras has no public graph walk: its nodes (each call of a layer) are read directly.
    # Only this graph's call counts: a split adds calls of the same layers (the top's).
    graph_nodes = {id(n) for nodes in backbone._nodes_by_depth.values() for n in nodes}
    calls = [n for n in layer._inbound_nodes if id(n) in graph_nodes]
    inbound = [t for node in calls for t in node.input_tensors]
    if len(calls) != 1 or len(inbound) != 1:
        raise UserError(f"--trainable_from {layer_name!r} takes {len(inbound)} inputs in {backbone.name}; cut at a "
                        "layer with a single input (e.g. the first layer of a block)")
    cut = inbound[0]
    if cut is backbone.input or not _producer(cut)[1]:
        raise UserError(f"--trainable_from {layer_name!r} leaves nothing frozen; for full fine-tuning use "
                        "--nofreeze_backbone (needs a GPU), or cut at a later layer")
    # Walk back from the output; reaching the input without crossing the cut means a
    # path (a residual connection) that bypasses it.
    stack, seen = [backbone.output], set()
    while stack:
        t = stack.pop()
        if t is cut or id(t) in seen:
            continue
        seen.add(id(t))
        _, parents = _producer(t)
        if not parents:
            raise UserError(f"--trainable_from {layer_name!r} does not separate {backbone.name}: a connection "
                            f"(e.g. a residual add) bypasses its input; cut at the first layer of a block, after "
                            f"the previous block's add (e.g. block_13_expand in MobileNetV2)")
        stack.extend(parents)
    bottom = keras.Model(backbone.input, cut, name=f"{backbone.name}_bottom")
    top = keras.Model(cut, backbone.output, name=f"{backbone.name}_top")
    if not top.weights:
        raise UserError(f"--trainable_from {layer_name!r} leaves no weights to train; cut at an earlier layer")
    top_layers = {id(l) for l in top.layers}
    shared = [l.name for l in bottom.layers if id(l) in top_layers and not isinstance(l, keras.layers.InputLayer)]
    if shared:  # training it would change the cached bottom's activations
        raise UserError(f"--trainable_from {layer_name!r}: layer {shared[0]} runs both below and above the cut; "
                        "cut at another layer")
    return bottom, top


def freeze_bottom(bottom: keras.Model, top: keras.Model, top_bn: str) -> None:
    """Make only the top trainable; with ``top_bn="frozen"`` its BatchNormalization
    layers also stay fixed (Keras runs a non-trainable BN in inference mode, so its
    moving statistics, gamma and beta never change)."""
    if top_bn not in TOP_BN_MODES:
        raise UserError(f"--top_bn must be {' or '.join(TOP_BN_MODES)}, got {top_bn!r}")
    for l in bottom.layers:
        l.trainable = False
    for l in top.layers:
        l.trainable = top_bn == "train" or not isinstance(l, keras.layers.BatchNormalization)
