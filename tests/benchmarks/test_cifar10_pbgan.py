"""benchmarks/cifar10_pbgan.py's tables: the GAN-health table, _ft rows next to their frozen
counterparts, old-style rows rendered as before; the cached-bottom code check."""

import os
import sys

import numpy as np
import pytest

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import cifar10_pbgan as bench  # noqa: E402

from bgan_tf.errors import UserError  # noqa: E402


def _row(map_all, **extra):
    return {"map_all": map_all, "map_1000": map_all + 0.2, "train_seconds": 100.0, "epochs": 20, **extra}


def _results():
    acc = {"d_acc_real": 0.991, "d_acc_recon": 0.98, "d_acc_prior": 1.0}
    return {"methods": {
        "ITQ": {"32": {"map_all": 0.28, "map_1000": 0.456}},
        "bgan_paper": {"32": _row(0.354, psnr_db=7.71, ssim=0.05, d_acc_last=acc)},
        "nbr_only_ft": {"32": _row(0.41, trainable_from="block_13_expand", top_bn="frozen")},
        "bgan_paper_ft": {"32": _row(0.39, psnr_db=12.34, ssim=0.2, d_acc_last={"d_acc_real": 0.5},
                                     trainable_from="block_13_expand", top_bn="frozen")},
        "nbr_only": {"32": _row(0.374)},  # recorded before this benchmark knew the new fields
        "bgan_paper_seed1": {"32": _row(0.365)},
        "bgan_paper_ft_seed1": {"32": _row(0.37, trainable_from="block_13_expand", top_bn="frozen")},
        "float_cosine": {"float": {"map_all": 0.3, "map_1000": 0.5}},
    }, "seconds": {}}


def _markdown(tmp_path, results):
    path = str(tmp_path / "out.md")
    bench.write_markdown(results, path)
    return open(path).read().splitlines()


def _table_rows(lines, header_prefix):
    start = next(i for i, line in enumerate(lines) if line.startswith(header_prefix))
    rows = []
    for line in lines[start + 4:]:  # text, blank, header, separator
        if not line.startswith("| "):
            break
        rows.append(line)
    return rows


def test_ft_rows_follow_their_frozen_counterparts(tmp_path):
    lines = _markdown(tmp_path, _results())
    main = [r.split(" | ")[0][2:] for r in _table_rows(lines, "mAP@all / mAP@1000")]
    assert main == ["ITQ", "nbr_only", "nbr_only_ft", "bgan_paper", "bgan_paper_ft", "bgan_paper_seed1",
                    "bgan_paper_ft_seed1"]
    assert "| nbr_only | 0.374 / 0.574 |" in lines  # an old-style row renders as before
    assert any(line.startswith("`_ft` rows: the backbone from `block_13_expand` on (top BatchNorms frozen)")
               for line in lines)


def test_gan_health_table_lists_only_rows_with_the_new_fields(tmp_path):
    lines = _markdown(tmp_path, _results())
    rows = _table_rows(lines, "GAN health of each GAN row")
    assert rows == ["| bgan_paper | 0.99 / 0.98 / 1.00, 7.7 dB |",
                    "| bgan_paper_ft | 0.50 / ? / ?, 12.3 dB |"]


def test_results_without_new_fields_render_as_before(tmp_path):
    results = _results()
    for name in ("bgan_paper_ft", "nbr_only_ft", "bgan_paper_ft_seed1"):
        del results["methods"][name]
    for row in results["methods"]["bgan_paper"].values():
        for k in ("psnr_db", "ssim", "d_acc_last"):
            del row[k]
    lines = _markdown(tmp_path, results)
    assert not any("GAN health" in line or "`_ft` rows" in line for line in lines)
    main = [r.split(" | ")[0][2:] for r in _table_rows(lines, "mAP@all / mAP@1000")]
    assert main == ["ITQ", "nbr_only", "bgan_paper", "bgan_paper_seed1"]  # the order it always had


class _FakeEncoder:
    """What check_bottom_codes uses of a LoadedEncoder: encode(images) -> signs."""

    def __init__(self, codes):
        self.codes = codes

    def encode(self, images):
        return self.codes[: len(images)]


def test_bottom_code_check_allows_one_flipped_bit_and_refuses_two():
    codes = np.where(np.random.default_rng(0).random((16, 32)) < 0.5, -1.0, 1.0).astype(np.float32)
    images = np.zeros((16, 8, 8, 3), np.uint8)
    assert bench.check_bottom_codes(_FakeEncoder(codes), images, codes) == 0
    one = codes.copy()
    one[3, 7] *= -1
    assert bench.check_bottom_codes(_FakeEncoder(codes), images, one) == 1
    two = one.copy()
    two[9, 0] *= -1
    with pytest.raises(UserError, match="differ from the codes of the images on 2 of 512 bit positions"):
        bench.check_bottom_codes(_FakeEncoder(codes), images, two)


def _whole(stages, command="benchmarks/cifar10_pbgan.py --whole_run"):
    return {"stages": stages, "seconds": sum(stages.values()), "date": "2026-12-01 20:00 UTC",
            "loadavg_at_start": [1.0, 1.0, 1.0], "map": {"ITQ": {"map_all": 0.28, "map_1000": 0.46}},
            "command": command}


def test_whole_runs_are_judged_against_their_own_budgets(tmp_path):
    results = _results()
    results["whole_run_32"] = _whole({"features_60k": 300.0, "bgan_paper_32_train": 700.0})
    results["whole_run_32_ft_lr1e-4"] = _whole({"bottom_60k": 200.0, "bgan_paper_ft_lr1e-4_32_train": 1400.0},
                                              "benchmarks/cifar10_pbgan.py --whole_run --trainable_from x")
    lines = [line for line in _markdown(tmp_path, results) if line.startswith("One whole 32-bit run")]
    assert len(lines) == 2
    assert "(whole_run_32," in lines[0] and "1000 s (16.7 min; target 15 min on 2 cores: NOT met" in lines[0]
    assert "(whole_run_32_ft_lr1e-4," in lines[1] and "1600 s (26.7 min; target 30 min on 2 cores: met" in lines[1]
    assert "--trainable_from x" in lines[1]
    assert bench.whole_run_stages("bgan_paper_ft", True) == (
        "load_images", "features_60k", "bottom_60k", "graph_10k", "ITQ_32", "bgan_paper_ft_32_train",
        "bgan_paper_ft_32_eval")


def test_merge_brings_the_other_runs_whole_run_blocks(tmp_path):
    import json

    out = str(tmp_path / "main")
    json.dump(_results(), open(out + ".json", "w"))
    other = {"methods": {"nbr_only_x": {"32": _row(0.4)}}, "seconds": {"a": 1.0},
             "whole_run_32_ft": _whole({"bottom_60k": 5.0})}
    json.dump(other, open(str(tmp_path / "other.json"), "w"))
    assert bench.merge(out, [str(tmp_path / "other.json")]) == 0
    merged = json.load(open(out + ".json"))
    assert merged["whole_run_32_ft"]["stages"] == {"bottom_60k": 5.0}
    assert merged["methods"]["nbr_only_x"]["32"]["map_all"] == 0.4 and "ITQ" in merged["methods"]


def test_rows_on_another_graph_say_how_good_it_is(tmp_path):
    results = _results()
    results["setup"] = {"graph_label_agreement": 0.3639}
    results["methods"]["nbr_only_diffusion"] = {"32": _row(0.393, override="graph_construction=diffusion",
                                                          graph_label_agreement=0.4641)}
    lines = [line for line in _markdown(tmp_path, results) if line.startswith("Rows trained on another")]
    assert lines == ["Rows trained on another neighbourhood graph (`--graph_construction`): the fraction of its "
                     "positive pairs that share a class (the K1/K2 graph's: 0.364): nbr_only_diffusion 32 bits "
                     "0.464."]


def test_override_values_may_be_tuples():
    assert bench.parse_override("w_pixel=0.1, gen_channels=(64,64,32),disc_spectral_norm=True,knn=exact") == {
        "w_pixel": 0.1, "gen_channels": (64, 64, 32), "disc_spectral_norm": True, "knn": "exact"}
    assert bench.parse_override("") == {}


def test_an_override_of_a_removed_knob_says_which_commit_had_it():
    """Issue 28: --override w_perceptual=1 (removed with 15 other knobs) is one message naming
    where to rerun it, not a dataclasses.replace traceback; current fields still apply."""
    import argparse

    args = argparse.Namespace(weights="w.h5", input_size=128, epochs=None, seed=0, cache="", trainable_from="",
                              top_bn="frozen", override="w_consistency=1.0,w_perceptual=1.0,lr_backbone=1e-4")
    with pytest.raises(SystemExit, match="--override lr_backbone, w_perceptual: removed .* issue 28 .*"
                                         "measured_with_commit"):
        bench.bgan_config("bgan_paper", 32, args, "out")
    args.override = "w_consistency=1.0"
    assert bench.bgan_config("bgan_paper", 32, args, "out").w_consistency == 1.0


def test_gan_health_cell_gives_the_references_when_recorded(tmp_path):
    results = _results()
    results["methods"]["bgan_paper"]["32"].update(psnr_other_code_db=9.91, psnr_mean_image_db=11.84)
    lines = _markdown(tmp_path, results)
    assert any(l.startswith("| bgan_paper |") and "7.7 dB (9.9 / 11.8)" in l for l in lines)
    assert any(l.startswith("| bgan_paper_ft |") and "12.3 dB |" in l for l in lines)  # recorded before: as it was
