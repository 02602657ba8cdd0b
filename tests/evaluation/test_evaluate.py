"""Evaluation of a trained model: library on the tiny model, the frozen-backbone fast
path, the binary end to end, and bad input as one-line errors with no report."""

import json
import os

import numpy as np
import pytest
from testlib import build_tiny_model, run_binary

from bgan_tf.evaluation import evaluator as ev_lib
from bgan_tf.data.sources import load_images
from bgan_tf.evaluation import inputs as eval_inputs

REPORT_FILES = ("metrics.json", "pr_curve.png", "precision_at_k.png", "retrieval_examples.png",
                "reconstructions.png", "index.md")


@pytest.fixture(scope="module")
def digits_subset():
    return load_images("digits").subset(np.arange(300))


def test_library_reports_model_and_baselines(tiny_model_dir, digits_subset, tmp_path):
    split = eval_inputs.build_split("holdout", digits_subset.labels, 0, holdout_per_class=3)
    assert split.sizes() == {"query": 30, "database": 270, "train": 270}
    # PCAH/ITQ are exercised on 1280-d backbone features below: a PCA of the tiny
    # model's 3072-d pixels costs ~25 s per baseline on the shared 2 cores.
    ev = ev_lib.evaluate_model(tiny_model_dir, digits_subset, split, baselines=("LSH", "float_cosine"),
                               map_at=(20,), num_examples=4)
    results = ev["results"]
    assert list(results) == ["BGAN", "LSH", "float cosine"]
    for name, m in results.items():
        assert 0.0 <= m["map_all"] <= 1.0, name
        assert 0.0 <= m["map_at"][20] <= 1.0, name
        assert m["num_queries"] == 30 and m["num_database"] == 270
    assert results["BGAN"]["num_bits"] == 16 and results["LSH"]["num_bits"] == 16
    assert results["BGAN"]["pr_curve"] is not None and len(results["BGAN"]["pr_curve"]["radius"]) == 17
    assert ev["info"]["baseline_features"].startswith("pixels")
    assert ev["info"]["training_data_matches"] is False  # the tiny model trained on all digits
    # Grid: 4 queries x (query + top 10), digits enlarged to >= 64 px for legibility.
    grid = ev["example_grid"]
    assert grid.dtype == np.uint8 and grid.shape[0] >= 4 * 64 and grid.shape[1] >= 11 * 64
    originals, recon = ev["reconstructions"]
    assert originals.shape == recon.shape and originals.shape[0] == 4

    out = ev_lib.write_evaluation_report(str(tmp_path / "report"), ev)
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == set(results)
    assert metrics["results"]["BGAN"]["split"]["sizes"]["query"] == 30
    index = (out / "index.md").read_text()
    assert "| LSH |" in index and "holdout" in index and "retrieval_examples.png" in index
    # PSNR/SSIM of G(code) on every held-out query, recomputed here from the saved generator.
    from bgan_tf.data.pipeline import images_for_gan
    from bgan_tf.inference.keras_model import load_encoder, load_generator

    q = digits_subset.images[split.query]
    real = images_for_gan(q, 32)
    recon = np.asarray(load_generator(tiny_model_dir)(load_encoder(tiny_model_dir).encode(q), training=False))
    want_psnr = np.mean(10 * np.log10(1.0 / np.mean((real - recon) ** 2, axis=(1, 2, 3))))
    quality = metrics["reconstruction"]
    assert quality["num_images"] == 30 and quality["resolution"] == 32
    assert quality["psnr_db"] == pytest.approx(want_psnr, rel=1e-4)
    assert -1.0 <= quality["ssim"] <= 1.0
    assert "## Reconstruction quality" in index and f"{quality['psnr_db']:.4f}" in index


def test_model_without_generator_reports_why_psnr_is_missing(tmp_path, digits_subset):
    model_dir = build_tiny_model(str(tmp_path), use_gan=False, steps_per_epoch=2)
    split = eval_inputs.build_split("holdout", digits_subset.labels, 0, holdout_per_class=2)
    ev = ev_lib.evaluate_model(model_dir, digits_subset, split, baselines=(), num_examples=0)
    assert ev["reconstructions"] is None and "no generator" in ev["reconstruction_quality"]["skipped"]
    out = ev_lib.write_evaluation_report(str(tmp_path / "report"), ev)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["reconstruction"]) == {"skipped"}
    assert "Not measured: the model folder has no generator" in (out / "index.md").read_text()


def test_holdout_split_is_what_train_held_out(digits_subset):
    from bgan_tf.evaluation.protocols import holdout_split

    ours = eval_inputs.build_split("holdout", digits_subset.labels, 7, holdout_per_class=5)
    theirs = holdout_split(digits_subset.labels, 5, 7)
    np.testing.assert_array_equal(ours.query, theirs.query)
    np.testing.assert_array_equal(ours.database, theirs.database)
    np.testing.assert_array_equal(ours.train, theirs.database)


def test_frozen_backbone_fast_path_gives_identical_codes(tmp_path, digits_subset):
    import keras

    from bgan_tf.modeling.backbones import BackboneSpec
    from bgan_tf.data.features import cached_features
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes

    weights = str(tmp_path / "mnv3.weights.h5")
    keras.utils.set_random_seed(1)
    keras.applications.MobileNetV3Small(include_top=False, weights=None, pooling="avg",
                                        input_shape=(32, 32, 3)).save_weights(weights)
    model_dir = build_tiny_model(str(tmp_path), backbone="MobileNetV3Small", backbone_weights=weights,
                                 freeze_backbone=True, graph_features="backbone",
                                 feature_cache_dir=str(tmp_path / "cache"), use_gan=False, max_images=200)
    enc = load_encoder(model_dir)
    data = digits_subset.subset(np.arange(120))
    spec = BackboneSpec("MobileNetV3Small", weights, 32)
    feats = cached_features(data.images, spec, data.fingerprint(), str(tmp_path / "cache"))
    np.testing.assert_array_equal(enc.encode(data.images), enc.encode_features(feats))

    split = eval_inputs.build_split("holdout", data.labels, 0, holdout_per_class=2)
    fast = ev_lib.evaluate_model(model_dir, data, split, baselines=("PCAH", "ITQ"), map_at=(10,), num_examples=0)
    assert fast["info"]["encode"].startswith("encode_features")
    # The same metrics as from codes of the images (the slow path).
    slow = evaluate_codes(enc.encode(data.images[split.query]), enc.encode(data.images[split.database]),
                          data.labels[split.query], data.labels[split.database], topk=(10,))
    assert fast["results"]["BGAN"]["map_all"] == slow["map_all"]
    assert fast["results"]["BGAN"]["map_at"] == slow["map_at"]
    assert fast["example_grid"] is None and fast["reconstructions"] is None  # no grid asked, no generator
    # Baselines use the model's graph features: the same cached backbone features.
    assert fast["info"]["baseline_features"].startswith("MobileNetV3Small features")
    for name in ("PCAH", "ITQ"):
        assert 0.0 <= fast["results"][name]["map_all"] <= 1.0


def test_binary_prints_table_and_writes_report(tiny_model_dir, tmp_path):
    report = tmp_path / "report"
    r = run_binary("bgan_tf.evaluate", "--model", tiny_model_dir, "--dataset", "digits", "--max_images", "250",
                   "--holdout_per_class", "3", "--baselines", "lsh,float_cosine", "--map_at", "20",
                   "--num_examples", "3", "--report_dir", str(report))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.split()}
    assert rows["method"] == ["mAP@all", "mAP@20", "P@r<=2"]
    assert 0.0 <= float(rows["BGAN"][0]) <= 1.0 and 0.0 <= float(rows["LSH"][2]) <= 1.0
    assert rows["float"][-1] == "-"  # float cosine has no Hamming radius
    assert "report written to" in r.stdout
    for name in REPORT_FILES:
        assert (report / name).is_file(), name


def test_helpshort_lists_eval_flags():
    r = run_binary("bgan_tf.evaluate", "--helpshort")
    for flag in ("--model", "--dataset", "--protocol", "--baselines", "--map_at", "--report_dir", "--num_examples"):
        assert flag in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--model", "/nonexistent/model"], "model folder not found"),
    (["--protocol", "cifar100"], "unknown --protocol"),
    (["--dataset", "npz:{unlabelled}"], "has no labels"),
    (["--holdout_per_class", "500"], "need 500 items per class"),
    (["--baselines", "ITQ,SH"], "unknown baseline 'SH'"),
    (["--map_at", "ten"], "--map_at: expected comma-separated integers"),
])
def test_bad_input_is_one_line_error_and_no_report(tiny_model_dir, tmp_path, args, message):
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, images=np.zeros((4, 8, 8, 3), np.uint8))
    args = [a.format(unlabelled=unlabelled) for a in args]
    if "--model" not in args:
        args = ["--model", tiny_model_dir, *args]
    report = tmp_path / "report"
    r = run_binary("bgan_tf.evaluate", *args, "--report_dir", str(report), timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not report.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".report")]


def test_encode_batch_shrinks_with_the_backbone_input_size(tiny_model_dir):
    """The closing evaluation of a MobileNetV2 run at 224 px encoded 128 images a call
    (~15 MB an image: +1.8 GB peak RSS); calls now hold about as many pixels as 128 at 128 px."""
    from bgan_tf.inference.keras_model import encode_batch_size, load_encoder

    assert [encode_batch_size(s) for s in (32, 128, 224, 512)] == [128, 128, 41, 8]
    enc = load_encoder(tiny_model_dir)
    enc.config.backbone_input_size = 224  # only the batch arithmetic reads it here
    seen, run = [], enc._encode
    enc._encode = lambda v: (seen.append(int(v.shape[0])), run(v))[1]
    codes = enc.encode(np.zeros((100, 32, 32, 3), np.uint8))
    assert codes.shape == (100, 16) and seen == [41, 41, 18]
