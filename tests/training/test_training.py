"""End-to-end training on the offline digits: losses fall, the model folder
is complete, and the saved encoder reproduces the in-memory codes."""

import json
import os

import numpy as np
import pytest

from bgan_tf.config import BGANConfig, apply_preset
from bgan_tf.data.sources import load_digits

TINY = dict(gen_channels=(16, 8, 8), disc_channels=(8, 8, 8, 8), disc_feature_dim=16, num_bits=16,
            graph_features="pixels", batch_size=32, k1=10, k2=10)


@pytest.fixture(scope="module")
def digits_subset():
    d = load_digits()
    return d.subset(np.arange(320))


@pytest.mark.parametrize("preset", ["released_code", "paper"])
def test_losses_fall_and_model_folder_is_complete(tmp_path, digits_subset, preset):
    from bgan_tf.training.trainer import train

    cfg = apply_preset(BGANConfig(**TINY), preset).replace(epochs=4, output_dir=str(tmp_path / "run"),
                                                           beta_values=(1.0, 2.0), beta_every=2)
    result = train(cfg, digits_subset, verbose=0)
    # Each image is its own positive, and K1=10 neighbours are some of the others.
    assert 11 <= result.graph_pairs_per_item < len(digits_subset)
    h = result.history
    assert h["nbr"][-1] < h["nbr"][0]
    assert h["loss_e"][-1] < h["loss_e"][0]
    assert h["beta"] == [1.0, 1.0, 2.0, 2.0]  # continuation schedule applied per epoch
    assert all(np.isfinite(v).all() for v in h.values())
    model_dir = result.model_dir
    for name in ("encoder.weights.h5", "generator.weights.h5", "discriminator.weights.h5", "config.json",
                 "metadata.json"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    meta = json.load(open(os.path.join(model_dir, "metadata.json")))
    assert meta["num_bits"] == 16 and len(meta["model_id"]) == 16
    assert meta["training_data"]["count"] == 320
    samples = os.listdir(tmp_path / "run" / "samples")
    assert "epoch_004.png" in samples
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "run" / "logs" / "train"))


def test_saved_encoder_reproduces_codes_and_rerun_does_not_retrain(tmp_path, digits_subset):
    import tensorflow as tf

    from bgan_tf.inference.keras_model import load_encoder, load_generator
    from bgan_tf.training.trainer import train

    cfg = BGANConfig(**TINY).replace(epochs=1, output_dir=str(tmp_path / "run"), steps_per_epoch=3)
    train(cfg, digits_subset, verbose=0)
    enc = load_encoder(os.path.join(str(tmp_path / "run"), "model"))
    codes = enc.encode(digits_subset.images[:50])
    assert codes.shape == (50, 16) and set(np.unique(codes)) <= {-1.0, 1.0}
    # Any input size: resized inside the graph.
    big = tf.image.resize(digits_subset.images[:3].astype(np.float32), (48, 40)).numpy().astype(np.uint8)
    assert enc.encode(big).shape == (3, 16)
    gen = load_generator(enc.model_dir)
    assert gen(tf.constant(codes[:2])).shape == (2, 32, 32, 3)
    again = train(cfg, digits_subset, verbose=0)
    assert again.epochs_run == 0  # finished run: nothing retrained
    np.testing.assert_array_equal(load_encoder(again.model_dir).encode(digits_subset.images[:50]), codes)


def test_nbr_only_ablation_has_no_gan(tmp_path, digits_subset, capsys):
    """Issue 28 item 6: a run without G and D logs only the encoder's losses; no adv_g,
    loss_g, pixel or D accuracy sits at zero in the history or the progress line."""
    from bgan_tf.training.trainer import train

    cfg = apply_preset(BGANConfig(**TINY), "nbr_only").replace(epochs=1, output_dir=str(tmp_path / "r"),
                                                               steps_per_epoch=2)
    result = train(cfg, digits_subset, verbose=2)  # 2: one progress line per epoch
    assert not os.path.exists(os.path.join(result.model_dir, "generator.weights.h5"))
    assert set(result.history) == {"loss_e", "nbr", "quant", "beta"}
    progress = capsys.readouterr().out
    assert "loss_e" in progress and "nbr" in progress
    for gan_metric in ("loss_g", "loss_d", "adv_g", "pixel", "feature", "d_acc"):
        assert gan_metric not in progress, progress


def test_consistency_term_makes_an_image_and_its_mirror_agree(tmp_path, digits_subset):
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.training.trainer import train

    images = digits_subset.images[:200]
    disagreement = {}
    for w in (0.0, 30.0):
        cfg = apply_preset(BGANConfig(**TINY), "nbr_only").replace(
            epochs=3, w_consistency=w, output_dir=str(tmp_path / f"run{w:g}"))
        result = train(cfg, digits_subset, verbose=0)
        if w:
            assert np.isfinite(result.history["consistency"]).all()
            assert result.history["consistency"][-1] < result.history["consistency"][0]
        else:
            assert "consistency" not in result.history
        enc = load_encoder(result.model_dir)
        disagreement[w] = np.mean(enc.encode(images) != enc.encode(images[:, :, ::-1]))
    # Fraction of bits that differ between an image's code and its mirror's.
    assert disagreement[30.0] < 0.5 * disagreement[0.0], disagreement


def test_model_metadata_names_the_commit_training_started_from(tmp_path, digits_subset, monkeypatch):
    from bgan_tf.inference import model_folder
    from bgan_tf.training.trainer import train

    calls = iter(["commit_at_start", "commit_at_end"])  # HEAD moves while the run trains
    monkeypatch.setattr(model_folder, "git_commit", lambda: next(calls))
    cfg = apply_preset(BGANConfig(**TINY), "nbr_only").replace(epochs=1, steps_per_epoch=2,
                                                               output_dir=str(tmp_path / "run"))
    result = train(cfg, digits_subset, verbose=0)
    meta = json.load(open(os.path.join(result.model_dir, "metadata.json")))
    assert meta["git_commit"] == "commit_at_start"
