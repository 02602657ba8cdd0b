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
    "nbr_only_ft_lr1e-4": {"32": _cell(0.38, override="lr_e=1e-4")},
    "bgan_paper_ft_lr1e-4": {"32": _cell(0.385, override="lr_e=1e-4")},
    "bgan_paper_ft_other": {"32": _cell(0.30, override="w_nbr=5")},
    # A change to D only: no nbr_only row of its own.
    "bgan_paper_ft_lr1e-4_sn": {"32": _cell(0.39, override="lr_e=1e-4,disc_spectral_norm=True")},
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
    assert not any(l.startswith("- bgan_paper_seed1") for l in lines)  # seeds go in the spread lines
    assert "- bgan_paper 32 bits 0.362 over seeds 0, 1 (0.360, 0.365; range 0.005)" in lines


def test_cells_of_recorded_code_are_marked():
    r = {"methods": METHODS, "setup": {"backbone": "b"}}
    table = [l for l in render_readme.cifar_section(r) if l.startswith("| bgan_paper")]
    assert "| bgan_paper_ft | - | 0.400 / 0.500* |" in table
    assert "| bgan_paper | 0.330 / 0.430 | 0.360 / 0.460 |" in table


def test_a_bgan_row_is_measured_against_its_ablation_seed_by_seed():
    """The nbr_only row whose encoder trained with the same settings (preset plus --override,
    GAN-only knobs aside), whatever it is named; several seeds give a mean margin."""
    gan = "adam_epsilon=1e-7,nbr_form=released_scaled"
    ablation = "nbr_form=released_scaled,sign_mode=tanh"
    methods = {
        "ITQ": {"32": _cell(0.28)},
        "nbr_only": {"32": _cell(0.37, epochs=6)},
        "nbr_only_seed1": {"32": _cell(0.37, epochs=6)},
        "nbr_only_released_scaled": {"32": _cell(0.36, epochs=6, override="nbr_form=released_scaled")},
        "nbr_only_released_scaled_tanh": {"32": _cell(0.38, epochs=6, override=ablation)},
        "nbr_only_released_scaled_tanh_seed1": {"32": _cell(0.39, epochs=6, override=ablation)},
        "bgan_released_code_eps1e-7_scaled": {"32": _cell(0.385, epochs=6, override=gan)},
        "bgan_released_code_eps1e-7_scaled_seed1": {"32": _cell(0.371, epochs=6, override=gan)},
        # G and D widths are GAN-only: the same ablation.
        "bgan_released_code_wide": {"32": _cell(0.40, epochs=6, override=gan + ",gen_channels=(64,64,32)")},
        # So is the perceptual content term (it only exists with G).
        "bgan_released_code_perc": {"32": _cell(0.39, epochs=6, override=gan + ",w_perceptual=1.0")},
        # Another epoch count has no ablation: the name rule picks nbr_only.
        "bgan_released_code_long": {"32": _cell(0.40, epochs=12, override=gan)},
    }
    lines = render_readme._cifar_targets(methods, ["32"])
    assert any(l.startswith("- bgan_released_code_eps1e-7_scaled: 32 bits: ITQ +0.105, nbr_only_released_scaled_tanh +0.005,")
               for l in lines)
    assert any(l.startswith("- bgan_released_code_wide: 32 bits: ITQ +0.120, nbr_only_released_scaled_tanh +0.020")
               for l in lines)
    assert any(l.startswith("- bgan_released_code_perc: 32 bits: ITQ +0.110, nbr_only_released_scaled_tanh +0.010")
               for l in lines)
    assert any(l.startswith("- bgan_released_code_long: 32 bits: ITQ +0.120, nbr_only +0.030") for l in lines)
    assert ("- bgan_released_code_eps1e-7_scaled 32 bits over nbr_only_released_scaled_tanh: -0.007 mean over "
            "seeds 0, 1 (+0.005, -0.019)") in lines
    assert "- nbr_only_released_scaled_tanh 32 bits 0.385 over seeds 0, 1 (0.380, 0.390; range 0.010)" in lines


def test_margins_say_when_the_two_rows_were_trained_on_different_cpus():
    methods = {
        "ITQ": {"32": _cell(0.28)},
        "nbr_only_x": {"32": _cell(0.40, override="w_consistency=1.0", cpu="A")},
        "nbr_only_x_seed1": {"32": _cell(0.41, override="w_consistency=1.0", cpu="B")},
        "bgan_paper_x": {"32": _cell(0.41, override="w_consistency=1.0,w_adv=0.1", cpu="A")},
        "bgan_paper_x_seed1": {"32": _cell(0.40, override="w_consistency=1.0,w_adv=0.1", cpu="A")},
    }
    methods = {k: {"32": {**v["32"], "epochs": 6}} if k != "ITQ" else v for k, v in methods.items()}
    lines = render_readme._cifar_targets(methods, ["32"])
    # Seed 0: both on CPU A, no flag.
    assert any(l.startswith("- bgan_paper_x: 32 bits: ITQ +0.130, nbr_only_x +0.010, paper") for l in lines)
    assert ("- bgan_paper_x 32 bits over nbr_only_x: +0.000 mean over seeds 0, 1 (+0.010, -0.010); seed 1 "
            "against a row trained on another CPU") in lines
    assert render_readme.other_cpu({"cpu": "A"}, {"cpu": "B"})
    assert not render_readme.other_cpu({"cpu": "A"}, {})  # unrecorded: not flagged


def test_a_row_at_another_input_size_is_not_measured_against_the_default_size():
    """Rows that differ only in --input_size (recorded per cell; older cells were all at the
    default 128) are different encoders: the 160 px BGAN row's ablation is the 160 px one."""
    cons = "w_consistency=1.0"
    methods = {
        "ITQ": {"32": _cell(0.28)},
        "nbr_only_ft_x": {"32": _cell(0.42, epochs=6, override=cons)},
        "nbr_only_ft_x_160px": {"32": _cell(0.41, epochs=6, override=cons, input_size=160)},
        "bgan_paper_ft_x_160px": {"32": _cell(0.40, epochs=6, override=cons + ",w_adv=0.1", input_size=160)},
        "bgan_paper_ft_x": {"32": _cell(0.43, epochs=6, override=cons + ",w_adv=0.1", input_size=128)},
    }
    lines = render_readme._cifar_targets(methods, ["32"])
    # ITQ was fitted on 128 px features only: no ITQ margin for the 160 px row.
    assert any(l.startswith("- bgan_paper_ft_x_160px: 32 bits: nbr_only_ft_x_160px -0.010,") for l in lines)
    assert any(l.startswith("- bgan_paper_ft_x: 32 bits: ITQ +0.150, nbr_only_ft_x +0.010,") for l in lines)
