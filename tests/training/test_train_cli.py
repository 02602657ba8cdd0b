"""The train binary: help, bad input as one-line errors, a short real run."""

import os

import pytest
from testlib import run_binary


def test_helpshort_explains_flags():
    r = run_binary("bgan_tf.train", "--helpshort", timeout=600)
    assert r.returncode in (0, 1)  # absl exits 1 after printing help
    for flag in ("--num_bits", "--sign_mode", "--strategy", "--preset", "--dataset", "--backbone_weights"):
        assert flag in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--sign_mode", "round"], "--sign_mode must be tanh, app or ste"),
    (["--preset", "best"], "unknown --preset"),
    (["--dataset", "folder:/nonexistent/dir"], "image folder not found"),
    (["--config", "imagenet"], "unknown --config"),
    (["--config", "cifar10:best"], "the variants of cifar10 are: cifar10:finetune"),
    (["--backbone", "NoSuchNet", "--graph_features", "pixels"], "unknown backbone"),
    (["--gen_channels", "a,b"], "expected comma-separated numbers"),
])
def test_bad_input_is_one_line_error_without_traceback(tmp_path, args, message):
    r = run_binary("bgan_tf.train", *args, "--output_dir", str(tmp_path / "out"), "--epochs", "1", timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "model").exists()


def test_short_run_prints_map_next_to_itq(tmp_path):
    """Also pins issue 28, item 6 (quiet logs): stdout is not a terminal here, so each epoch
    is one line and no progress bar (no backspace, no carriage return); FAISS's loader
    lines and TensorFlow's per-save "Sharding callback duration" line are gone."""
    r = run_binary("bgan_tf.train", "--epochs", "2", "--steps_per_epoch", "3", "--batch_size", "32",
                   "--gen_channels", "16,8,8", "--disc_channels", "8,8,8,8", "--disc_feature_dim", "16",
                   "--num_bits", "16", "--holdout_per_class", "5", "--output_dir", str(tmp_path / "run"),
                   timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model saved to" in r.stdout
    lines = {l.split()[0]: l.split()[1:] for l in r.stdout.splitlines() if l.split()[:1] in (["BGAN"], ["ITQ"])}
    assert set(lines) == {"BGAN", "ITQ"}
    assert 0.0 < float(lines["ITQ"][0]) <= 1.0
    assert os.path.isfile(tmp_path / "run" / "eval.json")
    assert "\b" not in r.stdout and "\r" not in r.stdout
    epochs = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"], r.stdout[:2000]
    assert len(epochs[0].split("  ")) > 2  # epoch, seconds, then the logged losses
    for chatter in ("Loading faiss", "Could not load", "Sharding callback"):
        assert chatter not in r.stderr, r.stderr[-3000:]
