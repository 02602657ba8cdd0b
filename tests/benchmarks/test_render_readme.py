"""benchmarks/render_readme.py's CIFAR-10 margins: each BGAN row against ITQ, against the
nbr_only row with the same backbone setting, and against the paper's figure."""

import os
import sys

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import render_readme  # noqa: E402


def _cell(map_all, **extra):
    return {"map_all": map_all, "map_1000": map_all + 0.1, **extra}


METHODS = {
    "ITQ": {"32": _cell(0.28), "24": _cell(0.27)},
    "nbr_only": {"32": _cell(0.37)},
    "nbr_only_ft": {"32": _cell(0.35)},
    "bgan_paper": {"32": _cell(0.36), "24": _cell(0.33)},
    "bgan_paper_ft": {"32": _cell(0.40, commit="abc1234")},
    "bgan_paper_seed1": {"32": _cell(0.365)},
    "nbr_only_ft_lr1e-4": {"32": _cell(0.38)},
    "bgan_paper_ft_lr1e-4": {"32": _cell(0.385)},
    "bgan_paper_ft_other": {"32": _cell(0.30)},
    "bgan_paper_ft_lr1e-4_sn": {"32": _cell(0.39)},  # a change to D only: no nbr_only row of its own
}


def test_fine_tuned_rows_are_measured_against_fine_tuned_nbr_only():
    lines = render_readme._cifar_targets(METHODS, ["24", "32"])
    ft = next(l for l in lines if l.startswith("- bgan_paper_ft:"))
    assert ft == "- bgan_paper_ft: 32 bits: ITQ +0.120, nbr_only_ft +0.050, paper -0.131"
    frozen = next(l for l in lines if l.startswith("- bgan_paper:"))
    # 24 bits has no nbr_only row and no published figure: only the ITQ margin.
    assert frozen == "- bgan_paper: 24 bits: ITQ +0.060; 32 bits: ITQ +0.080, nbr_only -0.010, paper -0.171"
    # A variant is measured against the nbr_only row of the same variant when there is one.
    assert any(l.startswith("- bgan_paper_ft_lr1e-4: 32 bits: ITQ +0.105, nbr_only_ft_lr1e-4 +0.005,") for l in lines)
    assert any(l.startswith("- bgan_paper_ft_other: 32 bits: ITQ +0.020, nbr_only_ft -0.050,") for l in lines)
    # ... else against the longest leading part of its variant that has one.
    assert any(l.startswith("- bgan_paper_ft_lr1e-4_sn: 32 bits: ITQ +0.110, nbr_only_ft_lr1e-4 +0.010,") for l in lines)
    assert not any(l.startswith("- bgan_paper_seed1") for l in lines)  # seeds go in the spread line
    assert any("bgan_paper 32 bits 0.360 vs 0.365" in l for l in lines)


def test_cells_of_recorded_code_are_marked():
    r = {"methods": METHODS, "setup": {"backbone": "b"}}
    table = [l for l in render_readme.cifar_section(r) if l.startswith("| bgan_paper")]
    assert "| bgan_paper_ft | - | 0.400 / 0.500* |" in table
    assert "| bgan_paper | 0.330 / 0.430 | 0.360 / 0.460 |" in table
