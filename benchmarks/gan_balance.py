"""Does the discriminator stay in the game? Each remedy against a dominant D, measured
on the README's main job (digits config, no download) with the same seed and budget.

    nice -n 10 .venv/bin/python benchmarks/gan_balance.py [--epochs 4] [--runs a,b] [--seeds 0]

Every run is a fresh process (`--child`): the train binary's holdout split (20 queries
per class, held out of training), `trainer.train` on the rest, then on the held-out
queries mAP@all of BGAN and of ITQ on the same pixels (`quick_evaluate`) and PSNR/SSIM of
G(code) against the query images (`evaluation.reconstruction`). It records per epoch
loss_d, adv_g and D's accuracy on real images, on G(code) and on G(prior) (fraction judged
fake), and the training seconds. ``--runs`` reruns some entries and keeps the others'
measured results when the budget (epochs, config) is the same. Writes
benchmarks/results/gan_balance.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RESULT = os.path.join(ROOT, "benchmarks", "results", "gan_balance")
TARGET = 0.95  # issue 14: D's accuracy on fakes in the last epoch below this
# name -> (what it changes, config overrides on top of the digits config)
REMEDIES: dict[str, tuple[str, dict]] = {
    "baseline": ("digits config as it is (paper preset: bce, D trains on G(code))", {}),
    "spectral_norm": ("SpectralNormalization on D's layers, D's batch norm off", {"disc_spectral_norm": True}),
    "label_smoothing": ("one-sided: D's real target 0.9", {"d_label_smoothing": 0.1}),
    "instance_noise": ("Gaussian noise std 0.1 on D's inputs, to 0 over the run", {"instance_noise": 0.1}),
    "hinge": ("hinge loss for D and G", {"gan_loss": "hinge"}),
    "ttur": ("two time scales: lr_d = lr_g / 4 (a slower D)", {"lr_d": 2.5e-4}),
    "g_steps_2": ("two G updates per step", {"g_steps": 2}),
    "sn_hinge": ("spectral norm + hinge", {"disc_spectral_norm": True, "gan_loss": "hinge"}),
    "smooth_noise": ("label smoothing 0.1 + instance noise 0.1",
                     {"d_label_smoothing": 0.1, "instance_noise": 0.1}),
}
HISTORY_KEYS = ("loss_d", "adv_g", "loss_g", "loss_e", "d_acc_real", "d_acc_recon", "d_acc_prior")


def machine() -> dict:
    from cpuinfo import cpu_flags, cpu_model

    flags = cpu_flags()
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "simd": simd, "python": platform.python_version()}


def child(name: str, epochs: int, seed: int, out_json: str) -> None:
    """One run: train with the remedy, evaluate on the held-out queries, write JSON."""
    import numpy as np

    from bgan_tf import atomic
    from bgan_tf.configs.digits import get_config
    from bgan_tf.data.pipeline import images_for_gan
    from bgan_tf.data.sources import load_training_data
    from bgan_tf.evaluation.protocols import holdout_split
    from bgan_tf.evaluation.quick import quick_evaluate
    from bgan_tf.evaluation.reconstruction import reconstruction_quality
    from bgan_tf.inference.keras_model import load_encoder, load_generator
    from bgan_tf.training.trainer import train

    overrides = REMEDIES[name][1]
    work = tempfile.mkdtemp(prefix=f"gan_balance_{name}_")
    config = get_config().replace(epochs=epochs, seed=seed, output_dir=os.path.join(work, "run"),
                                  sample_every=1000, **overrides).validate()
    data = load_training_data(config)
    split = holdout_split(data.labels, 20, config.seed)  # what the train binary holds out
    query, database = data.subset(split.query), data.subset(split.database)
    t = time.time()
    result = train(config, database, verbose=0)
    wall = time.time() - t
    ev = quick_evaluate(result.model_dir, config, query, database)
    codes = load_encoder(result.model_dir).encode(query.images)
    quality = reconstruction_quality(load_generator(result.model_dir), codes,
                                     images_for_gan(query.images, config.image_size))
    h = result.history
    last = {k: h[k][-1] for k in ("d_acc_real", "d_acc_recon", "d_acc_prior")}
    trained_fakes = {"codes": ["d_acc_recon"], "prior": ["d_acc_prior"],
                     "both": ["d_acc_recon", "d_acc_prior"]}[config.fake_source]
    atomic.write_json(out_json, {
        "name": name, "seed": seed, "epochs": epochs, "overrides": overrides, "what": REMEDIES[name][0],
        "last_epoch": last, "fakes_d_trains_on": trained_fakes,
        "max_fake_accuracy": max(last["d_acc_recon"], last["d_acc_prior"]),
        "per_epoch": {k: [round(float(v), 4) for v in h[k]] for k in HISTORY_KEYS},
        "reconstruction": quality,
        "map_all": {m: r["map_all"] for m, r in ev.rows.items()},
        "map_at_100": {m: r["map_at_100"] for m, r in ev.rows.items()},
        "train_seconds": round(result.seconds["train"], 1), "run_seconds": round(wall, 1),
        "num_queries": ev.num_queries, "num_database": ev.num_database,
    })
    import shutil

    shutil.rmtree(work, ignore_errors=True)


def run_one(name: str, epochs: int, seed: int) -> dict:
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    os.unlink(path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    load = os.getloadavg()[0]
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--epochs", str(epochs),
                    "--seeds", str(seed), "--out", path], cwd=ROOT, env=env, check=True)
    with open(path) as f:
        r = json.load(f)
    os.unlink(path)
    r["load_average_at_start"] = round(load, 2)
    return r


def render(res: dict) -> str:
    runs = res["runs"]
    lines = [
        "# GAN balance on the digits job (issue 14)", "",
        f"`{res['command']}` on {res['machine']['cpu']} ({res['machine']['cores']} cores, "
        f"{' '.join(res['machine']['simd'])}), {res['date']}; load average at start {res['load_average_at_start']} "
        "(other jobs share the cores, so seconds are rough). "
        f"Digits config, {res['epochs']} epochs, {res['num_queries']} held-out queries vs "
        f"{res['num_database']} database images. D accuracy: last-epoch mean over steps; on fakes it is "
        f"the fraction judged fake. Target: below {TARGET} on fakes.", "",
        "| run | seed | D acc real | D acc G(code) | D acc G(prior) | loss_d last | adv_g last | PSNR dB | SSIM "
        "| mAP@all BGAN | mAP@all ITQ | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in runs.items():
        a, q = r["last_epoch"], r["reconstruction"]
        lines.append(
            f"| {r['name']} | {r['seed']} | {a['d_acc_real']:.3f} | {a['d_acc_recon']:.3f} | {a['d_acc_prior']:.3f} "
            f"| {r['per_epoch']['loss_d'][-1]:.4f} | {r['per_epoch']['adv_g'][-1]:.3f} | {q['psnr_db']:.2f} "
            f"| {q['ssim']:.3f} | {r['map_all']['BGAN']:.4f} | {r['map_all']['ITQ']:.4f} | {r['train_seconds']:.0f} |")
    missing = [n for n in REMEDIES if not any(r["name"] == n for r in runs.values())]
    if missing:
        lines += ["", f"Not measured in this file (run was stopped before them): {', '.join(missing)}."]
    lines += ["", "What each run changes:", ""]
    for name, (what, over) in REMEDIES.items():
        lines.append(f"- `{name}`: {what} (`{json.dumps(over)}`)")
    lines += ["", "loss_d / adv_g per epoch:", ""]
    for key, r in runs.items():
        e = r["per_epoch"]
        lines.append(f"- {key}: loss_d {e['loss_d']}; adv_g {e['adv_g']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--runs", default=",".join(REMEDIES), help="comma-separated entries of REMEDIES")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each run is trained with each")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = p.parse_args()
    if not 1 <= args.epochs <= 100:
        p.error("--epochs must be from 1 to 100")
    if args.child:
        child(args.child, args.epochs, int(args.seeds), args.out)
        return 0
    from bgan_tf import atomic

    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in REMEDIES]
    if unknown:
        p.error(f"unknown runs {unknown}; choose from {', '.join(REMEDIES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    old = {}
    if os.path.exists(RESULT + ".json"):
        with open(RESULT + ".json") as f:
            old = json.load(f)
    if args.render:
        finish(old)
        return 0
    keep = old.get("runs", {}) if old.get("epochs") == args.epochs else {}
    res = {"command": "nice -n 10 python benchmarks/gan_balance.py " + " ".join(sys.argv[1:]),
           "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "load_average_at_start": round(os.getloadavg()[0], 2), "epochs": args.epochs, "runs": dict(keep)}
    for seed in seeds:
        for name in names:
            r = run_one(name, args.epochs, seed)
            res["runs"][f"{name}/seed{seed}"] = r
            res["num_queries"], res["num_database"] = r["num_queries"], r["num_database"]
            print(json.dumps({k: r[k] for k in ("name", "seed", "last_epoch", "reconstruction", "map_all",
                                                "train_seconds")}), flush=True)
            finish(res)  # after every run: a killed benchmark keeps what it measured
    return 0


def finish(res: dict) -> None:
    from bgan_tf import atomic

    order = {f"{n}/seed{s}": i for i, (s, n) in enumerate((s, n) for s in (0, 1, 2) for n in REMEDIES)}
    res["runs"] = dict(sorted(res["runs"].items(), key=lambda kv: order.get(kv[0], 999)))
    res["meets_target"] = {k: r["max_fake_accuracy"] < TARGET for k, r in res["runs"].items()}
    atomic.write_json(RESULT + ".json", res)
    atomic.write_text(RESULT + ".md", render(res))


if __name__ == "__main__":
    sys.exit(main())
