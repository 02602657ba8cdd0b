"""benchmarks/render_results.py: README's one summary table and docs/results.md's full tables.

The CIFAR-10 margins: each BGAN row against ITQ, against the nbr_only row with the same
backbone setting, and against the paper's figure. Issue 28 item 4: the README stays short
(under 15 KB, no line over 120 characters, one results table of at most 8 rows) and its
table, like docs/results.md, is exactly what the script renders from the results files."""

import os
import sys

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import render_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


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
    lines = render_results._cifar_targets(METHODS, ["24", "32"])
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
    table = [l for l in render_results.cifar_section(r) if l.startswith("| bgan_paper")]
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
    lines = render_results._cifar_targets(methods, ["32"])
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
    lines = render_results._cifar_targets(methods, ["32"])
    # Seed 0: both on CPU A, no flag.
    assert any(l.startswith("- bgan_paper_x: 32 bits: ITQ +0.130, nbr_only_x +0.010, paper") for l in lines)
    assert ("- bgan_paper_x 32 bits over nbr_only_x: +0.000 mean over seeds 0, 1 (+0.010, -0.010); seed 1 "
            "against a row trained on another CPU") in lines
    assert render_results.other_cpu({"cpu": "A"}, {"cpu": "B"})
    assert not render_results.other_cpu({"cpu": "A"}, {})  # unrecorded: not flagged


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
    lines = render_results._cifar_targets(methods, ["32"])
    # ITQ was fitted on 128 px features only: no ITQ margin for the 160 px row.
    assert any(l.startswith("- bgan_paper_ft_x_160px: 32 bits: nbr_only_ft_x_160px -0.010,") for l in lines)
    assert any(l.startswith("- bgan_paper_ft_x: 32 bits: ITQ +0.150, nbr_only_ft_x +0.010,") for l in lines)


def _block(path: str) -> list[str]:
    text = open(os.path.join(ROOT, path), encoding="utf-8").read()
    return text.split("<!-- results:begin -->\n", 1)[1].split("\n<!-- results:end -->", 1)[0].split("\n")


def _tables(lines: list[str]) -> list[list[str]]:
    """Markdown tables: runs of lines starting with '|' that have a |--- separator row."""
    tables, run = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            run.append(line)
            continue
        if any(l.startswith("|---") for l in run):
            tables.append(run)
        run = []
    return tables


def test_readme_is_short_with_one_small_results_table():
    """Issue 28 item 4: a README a newcomer reads in five minutes (it was 42,867 bytes with a
    92-row table and 1,007-character lines)."""
    raw = open(os.path.join(ROOT, "README.md"), "rb").read()
    assert len(raw) < 15_000
    lines = raw.decode("utf-8").split("\n")
    assert max(len(l) for l in lines) <= 120, [l for l in lines if len(l) > 120]
    results = [t for t in _tables(lines) if "mAP" in t[0]]
    assert len(results) == 1
    assert len(results[0]) - 2 <= 8  # header and separator aside


def test_readme_and_results_page_hold_what_the_script_renders():
    """A results file changed without rerunning benchmarks/render_results.py fails here
    (issue 28 item 4: the table is rendered from the results file, not hand-copied)."""
    assert _block("README.md") == render_results.summary_section(render_results._load("cifar10_pbgan.json"))
    assert _block("docs/results.md") == render_results.full_tables()


def test_summary_cells_are_seed_means_with_their_range_and_mark_mixed_cpus():
    """Each summary cell is the mean over the row's seeds with the min-max range, a single
    run says so, and seeds trained on different CPUs or input sizes are marked, not averaged
    silently (unrecorded cells ran on the AMD EPYC)."""
    methods = {
        "nbr_only": {"32": _cell(0.40, cpu="AMD EPYC"), "12": _cell(0.30)},
        "nbr_only_seed1": {"32": _cell(0.44)},
        "nbr_only_seed2": {"32": _cell(0.42, cpu="AMD EPYC")},
        "bgan_paper": {"32": _cell(0.40, cpu="Intel(R) Xeon(R) Processor")},
        "bgan_paper_seed1": {"32": _cell(0.42)},
        "ITQ": {"32": _cell(0.28, input_size=160)},
        "ITQ_seed1": {"32": _cell(0.29)},
    }
    assert render_results.summary_cell(methods, "nbr_only", "32") == "0.420 (.400-.440)"
    assert render_results.summary_cell(methods, "nbr_only", "12") == "0.300 (1 seed)"
    assert render_results.summary_cell(methods, "nbr_only", "64") == "-"
    assert render_results.summary_cell(methods, "bgan_paper", "32") == "0.410 (.400-.420) \u2020"
    assert render_results.summary_cell(methods, "ITQ", "32").endswith("\u2020")
    table = render_results.summary_section({"methods": methods})
    assert table[0] == "| CIFAR-10 mAP@all | 12 bits | 32 bits |"
    # Rows trained without G and D are never labelled BGAN.
    assert all("BGAN" not in label for label, m in render_results.SUMMARY_ROWS if not m.startswith("bgan_"))


def test_each_summary_bgan_row_is_followed_by_its_ablation():
    """The README's comparison is fair: the row after each BGAN row trained its encoder
    exactly like it (GAN-only knobs aside), by the same rule as the margins."""
    methods = render_results._load("cifar10_pbgan.json")["methods"]
    rows = [m for _, m in render_results.SUMMARY_ROWS]
    for gan, ablation in zip(rows, rows[1:]):
        if gan.startswith("bgan_"):
            assert render_results._ablation_row(gan, methods, "32") == ablation
