"""Render the measured tables from benchmarks/results/*.json into README.md and docs/results.md.

    .venv/bin/python benchmarks/render_results.py

README.md gets one summary table (at most 8 rows: the baselines, the paper preset, the best
config, each next to the same encoder trained without G and D, by code length); docs/results.md
gets every table. Each file is rewritten only between `<!-- results:begin -->` and
`<!-- results:end -->` (written to a temporary file, then renamed); every number there comes
from a results file some benchmark script wrote. tests/benchmarks/test_render_results.py fails
when either file's block differs from what this renders, so a stale copy cannot ship.
"""

from __future__ import annotations

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmark modules it reads
RES = os.path.join(ROOT, "benchmarks", "results")


def _load(name):
    path = os.path.join(RES, name)
    return json.load(open(path)) if os.path.isfile(path) else None


def cifar_section(r) -> list[str]:
    methods = r["methods"]
    bits = sorted({b for rows in methods.values() for b in rows if b != "float"}, key=int)
    order = [m for m in ("LSH", "PCAH", "ITQ", "nbr_only", "bgan_released_code", "bgan_paper") if m in methods]
    order += [m for m in methods if m not in order and not m.startswith("float_cosine")]
    out = ["### CIFAR-10, P-BGAN protocol (mAP@all / mAP@1000)", "",
           "`benchmarks/cifar10_pbgan.py` -> `benchmarks/results/cifar10_pbgan.md`. "
           f"{r.get('setup', {}).get('backbone', '')}; 1,000 queries, 59,000 database, 10,000 training images. "
           "Rerun everything with `.venv/bin/python benchmarks/cifar10_pbgan.py` (needs ../shared), or one row with "
           "`--bits 32 --methods bgan_paper`; rows merge into the results file. The bgan_paper and ITQ rows at 32 bits "
           "come from the whole run timed below, with today's code, and cells marked * record the commit that trained "
           "them (cifar10_pbgan.json); the other learned cells and their training seconds (the cost "
           "table in cifar10_pbgan.md: 11-19 min per GAN row) predate oneDNN, the allocator settings "
           "(benchmarks/results/allocator.md) and the XNNPACK features. Cells that record a `cpu` ran on that "
           "CPU; the others on an AMD EPYC whose 2 cores other jobs shared. Compare rows trained on the same CPU: "
           "oneDNN rounds differently where it is on by default (AVX512_VNNI, AMX).", "",
           "| method | " + " | ".join(f"{b} bits" for b in bits) + " |", "|---|" + "---|" * len(bits)]
    for m in order:
        cells = [f"{methods[m][b]['map_all']:.3f} / {methods[m][b]['map_1000']:.3f}"
                 f"{'*' if 'commit' in methods[m][b] else ''}" if b in methods[m] else "-" for b in bits]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    out += _cifar_targets(methods, bits)
    from cifar10_pbgan import _whole_run_lines

    out += _whole_run_lines(r)
    if "float_cosine" in methods:
        f = methods["float_cosine"]["float"]
        out += ["", f"Float features with cosine ranking: {f['map_all']:.3f} / {f['map_1000']:.3f}. "
                    "Published (VGG-19 fine-tuned at 224 px): BGAN paper 0.401 / 0.531 / 0.558 mAP@all at "
                    "12 / 32 / 48 bits; released code re-run 0.44-0.46."]
    return out


# The paper's CIFAR-10 mAP@all (VGG-19 fine-tuned at 224 px; ../shared/notes/bgan_method.md).
PAPER_MAP_ALL = {"12": 0.401, "32": 0.531, "48": 0.558}


# Knobs that only shape G, D or their training: a BGAN row without them is its ablation.
GAN_ONLY = {"use_gan", "w_pixel", "w_feature", "w_adv", "fake_source", "adv_to_encoder", "gan_loss",
            "disc_spectral_norm", "d_label_smoothing", "instance_noise", "instance_noise_steps", "g_steps",
            "content_warmup_epochs", "content_to_encoder", "w_perceptual",
            "gen_channels", "disc_channels", "disc_feature_dim", "noise_dim", "lr_g", "lr_d"}
SEED_SUFFIX = re.compile(r"^(.*)_seed(\d+)$")


def split_seed(method: str) -> tuple[str, int]:
    """'nbr_only_tanh_seed2' -> ('nbr_only_tanh', 2); a name without the suffix is seed 0."""
    m = SEED_SUFFIX.match(method)
    return (m.group(1), int(m.group(2))) if m else (method, 0)


def input_size(cell: dict) -> int:
    """The backbone input size a cell was measured at (cells from before it was recorded: the default)."""
    from cifar10_pbgan import INPUT_SIZE

    return cell.get("input_size", INPUT_SIZE)


def encoder_setting(method: str, cell: dict) -> tuple | None:
    """What trained a learned cell's encoder, GAN-only knobs left out: its preset, --override,
    fine-tuning, input size and epochs. None for rows that are not BGAN or nbr_only."""
    from bgan_tf.config import LOSS_PRESETS
    from cifar10_pbgan import PRESET_OF_METHOD, parse_override

    base = split_seed(method)[0]
    preset = next((PRESET_OF_METHOD[p] for p in PRESET_OF_METHOD if base.startswith(p)), None)
    if preset is None:
        return None
    knobs = {**LOSS_PRESETS[preset], **parse_override(cell.get("override", ""))}
    # Fine-tuned rows carry the _ft tag in their names (older ones recorded no trainable_from).
    knobs.update(trainable_from=cell.get("trainable_from", ""), top_bn=cell.get("top_bn", ""),
                 epochs=cell.get("epochs"), fine_tuned="_ft" in base,
                 input_size=input_size(cell))
    return tuple(sorted((k, repr(v)) for k, v in knobs.items() if k not in GAN_ONLY))


def other_cpu(a: dict, b: dict) -> bool:
    """Two cells trained on different CPUs (rows before the field existed are not flagged):
    oneDNN's float rounding differs between CPUs, which moved reruns by up to 0.010."""
    return bool(a.get("cpu") and b.get("cpu") and a["cpu"] != b["cpu"])


def _ablation_row(method: str, methods: dict, bits: str) -> str | None:
    """The nbr_only row (same seed) whose encoder trained exactly like this BGAN row's."""
    if bits not in methods[method]:
        return None
    want, seed = encoder_setting(method, methods[method][bits]), split_seed(method)[1]
    for name, rows in methods.items():
        if name.startswith("nbr_only") and split_seed(name)[1] == seed and bits in rows \
                and encoder_setting(name, rows[bits]) == want:
            return name
    return None


def _same_setting_nbr_only(method: str, methods: dict, bits: str) -> str | None:
    """The nbr_only row trained like a BGAN row: its ablation (the same encoder settings,
    preset and --override, without G and D) when one is recorded; else the row of the same
    suffix (fine-tuning, variant), else the longest leading part of it that has one (a
    variant that only changes the GAN, ``_sn``, compares with the row without it), else the
    same backbone setting (``_ft`` or frozen)."""
    exact = _ablation_row(method, methods, bits)
    if exact:
        return exact
    for preset in ("bgan_released_code", "bgan_paper"):
        if not method.startswith(preset):
            continue
        suffix = method[len(preset):]
        while suffix:
            if "nbr_only" + suffix in methods:
                return "nbr_only" + suffix
            suffix = suffix[:suffix.rfind("_")] if "_" in suffix else ""
    name = "nbr_only_ft" if "_ft" in method else "nbr_only"
    return name if name in methods else None


def _cifar_targets(methods: dict, bits: list[str]) -> list[str]:
    """Each BGAN row's margins (mAP@all) over ITQ, over nbr_only with the same backbone
    setting (the GAN's target: +0.01), and over the paper's published figure."""
    lines = []
    for m in (m for m in methods if m.startswith("bgan_") and not split_seed(m)[1]):
        cells = []
        for b in bits:
            if b not in methods[m]:
                continue
            ref = _same_setting_nbr_only(m, methods, b)
            v = methods[m][b]["map_all"]
            itq = methods.get("ITQ", {}).get(b)
            part = [f"ITQ {v - itq['map_all']:+.3f}" if itq and input_size(itq) == input_size(methods[m][b]) else None,
                    f"{ref} {v - methods[ref][b]['map_all']:+.3f}"
                    + (" (trained on another CPU)" if other_cpu(methods[m][b], methods[ref][b]) else "")
                    if ref and b in methods[ref] else None,
                    f"paper {v - PAPER_MAP_ALL[b]:+.3f}" if b in PAPER_MAP_ALL else None]
            cells.append(f"{b} bits: " + ", ".join(p for p in part if p))
        if cells:
            lines.append(f"- {m}: " + "; ".join(cells))
    head = ("Margins in mAP@all of each BGAN row over ITQ, over nbr_only with the same backbone setting "
            "(its ablation, the same encoder settings without G and D, where one is recorded; targets: BGAN "
            "at least 0.01 above it at every length) and over the paper's figure:")
    return (["", head, ""] + lines if lines else []) + _seed_lines(methods, bits)


def _seed_lines(methods: dict, bits: list[str]) -> list[str]:
    """Rows run with several seeds (split, baselines and training all reseeded): the mean and
    range of mAP@all, and each BGAN row's margin over its nbr_only row seed by seed."""
    seeds: dict[str, dict[int, str]] = {}
    for m in methods:
        base, seed = split_seed(m)
        seeds.setdefault(base, {})[seed] = m
    spread, margins = [], []
    for base, by_seed in seeds.items():
        for b in bits:
            vals = {s: methods[m][b]["map_all"] for s, m in sorted(by_seed.items()) if b in methods[m]}
            if len(vals) < 2:
                continue
            v = list(vals.values())
            spread.append(f"{base} {b} bits {sum(v) / len(v):.3f} over seeds {', '.join(map(str, vals))} "
                          f"({', '.join(f'{x:.3f}' for x in v)}; range {max(v) - min(v):.3f})")
            if not base.startswith("bgan_"):
                continue
            diffs = {}
            for s, m in sorted(by_seed.items()):
                ref = _same_setting_nbr_only(m, methods, b) if b in methods[m] else None
                if ref and split_seed(ref)[1] == s:
                    diffs[s] = (methods[m][b]["map_all"] - methods[ref][b]["map_all"], split_seed(ref)[0],
                                other_cpu(methods[m][b], methods[ref][b]))
            refs = {r for _, r, _ in diffs.values()}
            if len(diffs) >= 2 and len(refs) == 1:
                d = [x for x, _, _ in diffs.values()]
                across = [str(s) for s, (_, _, o) in diffs.items() if o]
                margins.append(f"{base} {b} bits over {refs.pop()}: {sum(d) / len(d):+.3f} mean over seeds "
                               f"{', '.join(map(str, diffs))} ({', '.join(f'{x:+.3f}' for x in d)})"
                               + (f"; seed {', '.join(across)} against a row trained on another CPU" if across else ""))
    out = []
    if spread:
        out += ["", "Rows run with several seeds (split, baselines and training all reseeded), mAP@all:", ""]
        out += [f"- {line}" for line in spread]
    if margins:
        out += ["", "BGAN over its nbr_only row, seed by seed (mAP@all):", ""] + [f"- {line}" for line in margins]
    return out


def stage_costs_section(r: dict) -> list[str]:
    """What each stage of the CIFAR-10 job costs, as a fraction of the peak measured in the same run."""
    out = ["### What each stage costs (CIFAR-10 job, 2 cores)", "",
           f"`benchmarks/stage_costs.py` -> `benchmarks/results/stage_costs.md` ({r['date']}, {r['machine']}, "
           f"load average {r['loadavg_at_start'][0]:.1f} at start). Peak measured in the same run: "
           f"{r['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (float32 matmul and the backbone's heaviest conv in TF).", "",
           "| stage | items/s | GFLOP/s | fraction of peak |", "|---|---:|---:|---:|"]
    for name, row in r["stages"].items():
        gflops = f"{row['flops_per_s'] / 1e9:.1f}" if row.get("flops_per_s") else "-"
        frac = f"{row['fraction_of_peak']:.0%}" if row.get("fraction_of_peak") is not None else "-"
        out.append(f"| {name} | {row['items_per_s']:,.1f} {row['unit']} | {gflops} | {frac} |")
    shipped, wide = r["stages"].get("train_step_paper"), r["stages"].get("train_step_paper_released_widths")
    if shipped and wide:
        from bgan_tf.configs import get_config

        # The cifar10 config's epochs over the P-BGAN protocol's 10,000 training images.
        epochs = get_config("cifar10").epochs
        image_steps = epochs * 10_000
        out += ["", f"G and D at the released code's widths make a paper-preset step "
                    f"{shipped['items_per_s'] / wide['items_per_s']:.1f}x slower than at the widths the cifar10 config "
                    f"ships (an eighth / a quarter): the steps of its {epochs} epochs alone would take about "
                    f"{image_steps / wide['items_per_s'] / 60:.0f} min instead of "
                    f"{image_steps / shipped['items_per_s'] / 60:.0f}, "
                    "so the shipped config keeps the narrow widths and `--gen_channels 256,256,128,32 "
                    "--disc_channels 32,128,256,256 --disc_feature_dim 1024` restores the released ones."]
    return out


def search_section(r: dict, name: str, fallback_machine: str | None) -> list[str]:
    """One machine's search table. Queries/s by CPU time where the run recorded it (it
    shared the cores), else by wall clock."""
    m = r.get("machine")
    if isinstance(m, dict):
        machine = f"{m.get('cpu')}, SIMD {', '.join(m.get('simd', []))}, ours_exact path {m.get('ours_exact_path')}"
    else:
        machine = fallback_machine or str(m)
    cpu_time = any("qps_cpu" in row for rows in r["bits"].values() for row in rows.values())
    load = r.get("loadavg_at_start")
    out = [f"### Search: top-100 queries/s over {r.get('n', 1_000_000):,} codes (one thread), {machine}", "",
           f"`benchmarks/search_speed.py` -> `benchmarks/results/{name[:-5]}.md`"
           + (f"; queries/s by process CPU time (load average {load[0]:.1f} at start)" if cpu_time and load else "")
           + ".", "", "| bits | backend | queries/s | recall@100 | vs faiss_flat |", "|---|---|---|---|---|"]
    for bits, backends in r["bits"].items():
        base = backends.get("faiss_flat", {})
        key = "qps_cpu" if cpu_time else "qps"
        for backend, row in backends.items():
            x = row[key] / base[key] if base.get(key) else None
            ratio = "-" if x is None else f"{x:.1f}x" if x >= 1 else f"{x:.3f}x"
            out.append(f"| {bits} | {backend} | {row[key]:,.0f} | {row['recall_at_100']:.3f} | {ratio} |")
    return out


def digits_section(r) -> list[str]:
    rows = r["methods"]
    k = [key for key in next(iter(rows.values())) if key.startswith("map_at_")][0]
    out = ["### Digits, the default main job (`bash scripts/demo.sh`)", "",
           f"`benchmarks/results/digits_demo.json`; {r['num_queries']} held-out queries vs "
           f"{r['num_database']} database images, 32 bits.", "",
           f"| method | mAP@all | mAP@{k[7:]} |", "|---|---|---|"]
    out += [f"| {m} | {v['map_all']:.3f} | {v[k]:.3f} |" for m, v in rows.items()]
    return out


def simple_table(title, source, data, cols) -> list[str]:
    out = [f"### {title}", "", f"`{source}`", "", "| variant | " + " | ".join(cols) + " |",
           "|---|" + "---|" * len(cols)]
    for name, row in data.items():
        if isinstance(row, dict):
            out.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return out


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


# The README's table: (label, method row in cifar10_pbgan.json). A row trained without G and D
# is named by what it is, never "BGAN"; each BGAN row is followed by its ablation (the same
# encoder settings, GAN-only knobs aside, which encoder_setting() checks in the test).
SUMMARY_ROWS = (
    ("LSH", "LSH"),
    ("ITQ", "ITQ"),
    ("BGAN, cifar10 (paper preset)", "bgan_paper"),
    ("cifar10 without G and D", "nbr_only"),
    ("BGAN, cifar10:finetune", "bgan_paper_ft_lr1e-4_diffusion_sn_cons1_lrd3e-4_from_block10"),
    ("cifar10:finetune, no G/D", "nbr_only_ft_lr1e-4_diffusion_cons1_from_block10"),
)
# Cells that record no `cpu` ran on the 2-core AMD EPYC (the note at the top of the CIFAR-10
# section of docs/results.md); the summary needs a value to compare seeds' CPUs.
UNRECORDED_CPU = "AMD EPYC"


def summary_cell(methods: dict, base: str, bits: str) -> str:
    """The mean mAP@all of a row over its seeds (`base`, `base_seed1`, ...) with its min-max
    range, or the single value marked "1 seed"; a dagger when the seeds ran on different CPUs
    or input sizes (oneDNN rounds differently per CPU, which moved one rerun by 0.010)."""
    cells = [rows[bits] for name, rows in methods.items()
             if split_seed(name)[0] == base and bits in rows]
    if not cells:
        return "-"
    v = [c["map_all"] for c in cells]
    mixed = len({(c.get("cpu") or UNRECORDED_CPU, input_size(c)) for c in cells}) > 1
    mark = " \u2020" if mixed else ""
    if len(v) == 1:
        return f"{v[0]:.3f} (1 seed){mark}"
    # The range without its leading zeros keeps a row of five cells under 120 characters.
    return f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f}){mark}".replace("(0.", "(.").replace("-0.", "-.")


def summary_section(r: dict) -> list[str]:
    """README's one results table, CIFAR-10 mAP@all by code length."""
    methods = r["methods"]
    bits = sorted({b for _, m in SUMMARY_ROWS for b in methods.get(m, {})}, key=int)
    out = ["| CIFAR-10 mAP@all | " + " | ".join(f"{b} bits" for b in bits) + " |",
           "|---|" + "---:|" * len(bits)]
    for label, m in SUMMARY_ROWS:
        if m in methods:
            out.append(f"| {label} | " + " | ".join(summary_cell(methods, m, b) for b in bits) + " |")
    seeds = sorted({len([n for n in methods if split_seed(n)[0] == m and b in methods[n]])
                    for _, m in SUMMARY_ROWS for b in bits} - {0, 1})
    out += ["", "Each cell is the mean over " + " or ".join(map(str, seeds)) + " seeds (a seed reruns the split, the "
                "baselines and training)",
            "with the min-max range, or one seed's value; \u2020: the seeds ran on different CPUs, whose oneDNN "
            "kernels round",
            "differently. P-BGAN protocol (1,000 queries, 59,000 database, 10,000 training images), MobileNetV2",
            "(ImageNet) at 128 px, 6 epochs. `benchmarks/cifar10_pbgan.py` measured every cell into",
            "`benchmarks/results/cifar10_pbgan.json`; [docs/results.md](docs/results.md) has every row and margin."]
    return out


def full_tables() -> list[str]:
    """docs/results.md's block: every measured table."""
    parts: list[str] = []
    if (r := _load("digits_demo.json")):
        parts += digits_section(r) + [""]
    if (r := _load("cifar10_pbgan.json")):
        parts += cifar_section(r) + [""]
    if (r := _load("stage_costs.json")):
        parts += stage_costs_section(r) + [""]
    if (r := _load("encode_throughput.json")):
        parts += simple_table("Encoder throughput (images/s) and TFLite bit agreement",
                              "benchmarks/encode_throughput.py -> benchmarks/results/encode_throughput.md",
                              r, ["batch_1", "batch_64", "bytes", "bit_agreement"]) + [""]
    for name, title in (("encode_throughput_mobilenet_v2.json", "frozen MobileNetV2, 96 px, trained on digits"),
                        ("encode_throughput_extra.json", "CIFAR-10 model of the P-BGAN benchmark")):
        if (r := _load(name)):
            parts += simple_table(f"Encoder throughput and bit agreement: {title}",
                                  f"benchmarks/results/{name}; code stability under pixel noise in "
                                  "encode_throughput.md", r, ["batch_1", "batch_64", "bytes", "bit_agreement"]) + [""]
    for name, fallback in (("search.json", "Intel Xeon, AVX-512 VPOPCNTDQ (ours_exact's AVX-512 path)"),
                           ("search_avx2.json", None)):
        if (r := _load(name)):
            parts += search_section(r, name, fallback) + [""]
    if (r := _load("service_load.json")):
        parts += [f"### HTTP service load test", "", "`benchmarks/service_load.py`: "
                  f"{r['requests']} requests, {r['errors']} errors, {r['rps']:.0f} requests/s, "
                  f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms.", ""]
    if (r := _load("distributed_steps.json")):
        parts += ["### Training steps/s by strategy (two shared cores: correctness, not speed)", "",
                  "`benchmarks/distributed_steps.py`, global batch "
                  f"{r['global_batch']}:", "", "| setup | steps/s |", "|---|---|"]
        parts += [f"| {row['setup']} | {row['steps_per_s']:.2f} |" for row in r["results"]] + [""]
    return parts


def render_into(path: str, block: list[str]) -> None:
    """Replace the text between the markers of `path` with `block`, atomically."""
    text = open(path).read()
    head, rest = text.split("<!-- results:begin -->", 1)
    _, tail = rest.split("<!-- results:end -->", 1)
    new = head + "<!-- results:begin -->\n" + "\n".join(block) + "\n<!-- results:end -->" + tail
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def main() -> None:
    render_into(os.path.join(ROOT, "README.md"), summary_section(_load("cifar10_pbgan.json")))
    render_into(os.path.join(ROOT, "docs", "results.md"), full_tables())


if __name__ == "__main__":
    main()
