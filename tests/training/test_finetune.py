"""Partial fine-tuning (--trainable_from): the backbone is cut at a layer, the bottom's
activations are cached once as float16, and training updates only the top + hash head.

One tiny run (random-init MobileNetV2 alpha 0.35 with torch padding at 32 px, a few steps
on digits) backs the checks that the cached path, the in-memory encoder and the saved
model folder give the same codes, and that only the top's weights moved."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from testlib import SMALL_MOBILENET_SIZE, TINY_TRAIN

from bgan_tf.config import BGANConfig
from bgan_tf.data import features as features_lib
from bgan_tf.errors import UserError
from bgan_tf.modeling import backbones
from bgan_tf.modeling.backbones import build_backbone, split_backbone

CUT = "block_13_expand"
SIZE = SMALL_MOBILENET_SIZE  # the small_mobilenet fixture (tests/training/conftest.py)


@pytest.fixture(scope="module")
def initial_net(small_mobilenet):
    """The backbone as training starts it (built once: ~8 s on two shared cores)."""
    return build_backbone(small_mobilenet)


def _train_keeping_encoder(config: BGANConfig):
    """Train; return the result and the in-memory encoder training ends with."""
    from bgan_tf.inference import model_folder
    from bgan_tf.training.trainer import train

    kept = {}
    real_write = model_folder.write_model_folder

    def write(final_dir, cfg, encoder, *args, **kwargs):
        kept["encoder"] = encoder
        return real_write(final_dir, cfg, encoder, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model_folder, "write_model_folder", write)
        result = train(config, verbose=0)
    return result, kept["encoder"]


@pytest.fixture(scope="module")
def finetuned(small_mobilenet, tmp_path_factory):
    """Train a few steps with --trainable_from; keep the in-memory encoder training ends with."""
    root = tmp_path_factory.mktemp("finetune")
    config = BGANConfig(**{**TINY_TRAIN, "backbone": "mobilenet_v2_torch", "backbone_weights": small_mobilenet.weights,
                           "backbone_input_size": SIZE, "freeze_backbone": True, "trainable_from": CUT,
                           "feature_cache_dir": str(root / "cache"), "max_images": 200, "steps_per_epoch": 4, "use_gan": False,
                           "lr_e": 1e-3, "adam_epsilon": 1e-7, "output_dir": str(root / "run")})
    result, encoder = _train_keeping_encoder(config)
    return config, result.model_dir, encoder


def _digits(config):
    from bgan_tf.data.sources import load_training_data

    return load_training_data(config)


def test_cut_must_be_a_layer_that_separates_the_backbone(initial_net):
    net = initial_net
    with pytest.raises(UserError, match=r"not a layer of mobilenet_v2_torch: use a layer name such as .*block_16_expand"):
        split_backbone(net, "block_99_expand")
    # block_12_add also takes block_11_add: the depthwise conv's input does not cut the net in two.
    with pytest.raises(UserError, match="does not separate .* residual"):
        split_backbone(net, "block_12_depthwise")
    with pytest.raises(UserError, match="takes 2 inputs"):
        split_backbone(net, "block_12_add")
    with pytest.raises(UserError, match="leaves nothing frozen"):
        split_backbone(net, "Conv1_pad")
    bottom, top = split_backbone(net, CUT)
    assert bottom.output.shape[1:] == (2, 2, 32)  # block_12_add at 32 px, alpha 0.35
    x = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(top(bottom(x)), net(x), rtol=0, atol=1e-5)


def test_config_refuses_trainable_from_without_the_frozen_pretrained_path():
    base = BGANConfig(backbone="MobileNetV2", backbone_weights="imagenet", freeze_backbone=True, trainable_from=CUT)
    base.validate()
    with pytest.raises(UserError, match="needs --freeze_backbone"):
        base.replace(freeze_backbone=False).validate()
    with pytest.raises(UserError, match="pass --backbone_weights"):
        base.replace(backbone_weights=None).validate()
    with pytest.raises(UserError, match="--top_bn must be frozen or train"):
        base.replace(top_bn="moving").validate()


def test_top_bn_decides_whether_the_top_batch_norms_train(small_mobilenet, finetuned):
    from bgan_tf.modeling.networks import Encoder

    enc = Encoder(small_mobilenet, TINY_TRAIN["num_bits"], freeze_backbone=True, trainable_from=CUT, top_bn="train")
    enc(tf.zeros((1, SIZE, SIZE, 3)))
    train = {v.path for v in enc.trainable_variables}
    frozen = {v.path for v in finetuned[2].trainable_variables}  # trained with the default, frozen
    assert any("block_13_expand/kernel" in p for p in frozen)
    assert not any("block_12" in p for p in frozen | train)  # the bottom never trains
    assert not any("_BN/" in p for p in frozen)
    assert any("block_13_expand_BN/gamma" in p for p in train)
    assert frozen < train


def test_bottom_cache_is_float16_memory_mapped_and_reused(small_mobilenet, initial_net, tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (7, 20, 20, 3), dtype=np.uint8)
    acts = features_lib.cached_bottom(images, small_mobilenet, CUT, "fp", str(tmp_path), batch_size=3)
    path = features_lib.bottom_cache_path(small_mobilenet, CUT, "fp", str(tmp_path))
    assert isinstance(acts, np.memmap) and acts.mode == "r" and acts.dtype == np.float16
    assert acts.shape == (7, 2, 2, 32) and os.path.getsize(path) < 7 * 2 * 2 * 32 * 2 + 256
    # The key has the cut layer: another cut of the same backbone and data is another entry.
    assert path != features_lib.bottom_cache_path(small_mobilenet, "block_14_expand", "fp", str(tmp_path))
    mtime = os.stat(path).st_mtime_ns
    again = features_lib.cached_bottom(images, small_mobilenet, CUT, "fp", str(tmp_path))
    assert os.stat(path).st_mtime_ns == mtime
    np.testing.assert_array_equal(again, acts)
    bottom, _ = split_backbone(initial_net, CUT)
    prep = backbones.Preprocess(SIZE, "torch")
    ref = np.asarray(bottom(prep(images.astype(np.float32))))
    # float16 rounding (relative 2**-11) on top of graph-vs-eager float32 noise (~1e-6 of the scale).
    np.testing.assert_allclose(acts.astype(np.float32), ref, rtol=2**-11, atol=1e-5 * float(np.abs(ref).max()))


def test_large_sets_cache_the_bottom_through_xnnpack_with_the_same_activations(small_mobilenet, initial_net,
                                                                               tmp_path, monkeypatch):
    images = np.random.default_rng(4).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    used = []
    real = features_lib.xnnpack_forward

    def spy(*args):
        run = real(*args)
        used.append((args[3], run is not None))
        return run

    monkeypatch.setattr(features_lib, "xnnpack_forward", spy)
    monkeypatch.setattr(features_lib, "XNNPACK_MIN_IMAGES", 8)  # these 9 images count as a large set
    acts = features_lib.cached_bottom(images, small_mobilenet, CUT, "fp9", str(tmp_path), batch_size=4)
    assert used == [(f"the bottom below {CUT}", True)], "the bottom did not run on XNNPACK"
    bottom, _ = split_backbone(initial_net, CUT)
    ref = np.asarray(bottom(backbones.Preprocess(SIZE, "torch")(images.astype(np.float32))))
    np.testing.assert_allclose(acts.astype(np.float32), ref, rtol=2**-10, atol=1e-4 * float(np.abs(ref).max()))


def test_cached_path_and_model_folder_give_the_in_memory_encoders_codes(finetuned, small_mobilenet):
    from bgan_tf.inference.keras_model import load_encoder

    config, model_dir, encoder = finetuned
    data = _digits(config)
    images = tf.constant(data.images.astype(np.float32))
    codes = np.asarray(encoder(images, training=False))
    loaded = load_encoder(model_dir)
    np.testing.assert_array_equal(loaded.encode(data.images), codes)

    # Training's cache entry: top + head on its float16 activations.
    cached = features_lib.cached_bottom(data.images, small_mobilenet, CUT, data.fingerprint(),
                                        config.feature_cache_dir)
    cached_codes = np.asarray(encoder.encode_bottom(cached[:], training=False))
    assert len(np.unique(codes, axis=0)) > 20  # the codes depend on the image (not one constant code)
    agree = float(np.mean(cached_codes == codes))
    print(f"bit agreement cached float16 vs images: {agree:.4f}")
    assert agree >= 0.99, agree
    # Pre-sign values: the same function on unrounded activations, and within float16's
    # rounding (relative 2**-11 per activation, grown at most 16x through the top) on cached ones.
    _, top = encoder._split
    pre = np.asarray(encoder.pre_sign(encoder.features(images)))
    exact = np.asarray(encoder.pre_sign(top(encoder.bottom_activations(images))))
    scale = float(np.abs(pre).max())
    np.testing.assert_allclose(exact, pre, rtol=0, atol=1e-5 * scale)
    rounded = np.asarray(encoder.pre_sign(top(tf.cast(cached[:], tf.float32))))
    err = float(np.abs(rounded - pre).max())
    print(f"pre-sign max error from float16 storage: {err:.3g} (scale {scale:.3g})")
    assert 0 < err <= 16 * 2**-11 * scale, (err, scale)


def test_training_moves_the_top_and_keeps_the_bottom(finetuned, initial_net):
    _, _, encoder = finetuned
    initial = initial_net
    bottom, top = split_backbone(initial, CUT)
    trained = {v.path: np.asarray(v) for v in encoder.backbone.weights}
    assert len(trained) == len(initial.weights)

    def same(v) -> bool:
        return np.array_equal(trained[v.path], np.asarray(v))

    assert all(same(v) for v in bottom.weights)  # frozen, BN statistics included
    kernels = [v for v in top.weights if v.path.endswith("/kernel") or v.path.endswith("depthwise_kernel")]
    assert kernels and not [v.path for v in kernels if same(v)]
    assert all(same(v) for v in top.weights if "_BN/" in v.path)  # --top_bn frozen


def test_resume_refuses_another_cut(finetuned):
    from bgan_tf.training.trainer import check_run_dir

    config, _, _ = finetuned
    check_run_dir(config)
    with pytest.raises(UserError, match="--trainable_from block_13_expand .now block_14_expand."):
        check_run_dir(config.replace(trainable_from="block_14_expand"))
    with pytest.raises(UserError, match="--top_bn frozen .now train."):
        check_run_dir(config.replace(top_bn="train"))


def test_flip_augment_caches_the_mirrors_bottom_and_trains(small_mobilenet, initial_net, tmp_path, monkeypatch):
    from bgan_tf.training.trainer import train

    # 64 images count as a large set: the mirror (a negative-stride view) goes through XNNPACK.
    monkeypatch.setattr(features_lib, "XNNPACK_MIN_IMAGES", 8)
    cache = tmp_path / "cache"
    config = BGANConfig(**{**TINY_TRAIN, "backbone": "mobilenet_v2_torch", "backbone_weights": small_mobilenet.weights,
                           "backbone_input_size": SIZE, "freeze_backbone": True, "trainable_from": CUT,
                           "feature_cache_dir": str(cache), "max_images": 64, "steps_per_epoch": 2,
                           "use_gan": False, "flip_augment": True, "output_dir": str(tmp_path / "run")})
    result = train(config, verbose=0)
    data = _digits(config)
    mirror = np.load(features_lib.bottom_cache_path(small_mobilenet, CUT, data.fingerprint() + "|mirror", str(cache)))
    bottom, _ = split_backbone(initial_net, CUT)
    ref = np.asarray(bottom(backbones.Preprocess(SIZE, "torch")(data.images[:, :, ::-1].astype(np.float32))))
    np.testing.assert_allclose(mirror.astype(np.float32), ref, rtol=2**-10, atol=1e-4 * float(np.abs(ref).max()))
    assert os.path.isdir(result.model_dir) and np.isfinite(result.history["loss_e"]).all()
