"""What the malloc settings of bgan_tf.runtime buy: the digits training job with and
without them, alternated, in one run.

    .venv/bin/python benchmarks/allocator.py [--epochs 3] [--repeats 2]

Each run is `python -m bgan_tf.train --epochs N --noevaluate` into a fresh folder, with
BGAN_TF_MALLOC_TUNING=1 (the default every binary applies) or 0 (glibc's defaults).
Records wall, user and system seconds, minor page faults and peak RSS of each run from
the kernel's rusage, and writes benchmarks/results/allocator.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def one_run(tuning: bool, epochs: int) -> dict:
    out = tempfile.mkdtemp(prefix="bgan_alloc_")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", BGAN_TF_MALLOC_TUNING="1" if tuning else "0")
    cmd = [sys.executable, "-m", "bgan_tf.train", "--epochs", str(epochs), "--noevaluate",
           "--output_dir", os.path.join(out, "run")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    try:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wall = time.time() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"tuning": tuning, "wall_seconds": round(wall, 1),
            "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "system_seconds": round(after.ru_stime - before.ru_stime, 1),
            "minor_page_faults": after.ru_minflt - before.ru_minflt,
            # ru_maxrss of children is the largest child so far: only meaningful per first run
            "max_rss_mb_so_far": round(after.ru_maxrss / 1024)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--render", action="store_true", help="only rewrite allocator.md from allocator.json")
    args = p.parse_args()
    import json

    from bgan_tf import atomic

    if args.render:
        with open(os.path.join(ROOT, "benchmarks", "results", "allocator.json")) as f:
            runs = json.load(f)["runs"]
        args.repeats = len(runs) // 2
    else:
        runs = []
        for _ in range(args.repeats):
            for tuning in (False, True):  # alternated, so load on the machine hits both alike
                runs.append(one_run(tuning, args.epochs))
                print(runs[-1], flush=True)

    def median(key, tuning):
        return statistics.median(r[key] for r in runs if r["tuning"] == tuning)

    keys = ("wall_seconds", "user_seconds", "system_seconds", "minor_page_faults")
    summary = {k: {"glibc_defaults": median(k, False), "tuned": median(k, True)} for k in keys}
    result = {"command": f"python -m bgan_tf.train --epochs {args.epochs} --noevaluate (digits config)",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "runs": runs, "median": summary}
    atomic.write_json(os.path.join(ROOT, "benchmarks", "results", "allocator.json"), result)
    lines = ["# malloc settings (bgan_tf.runtime) on the digits training job", "",
             f"`benchmarks/allocator.py`: {result['command']}, {args.repeats} runs each, alternated; "
             f"{result['machine']}. Medians:", "",
             "| | glibc defaults | tuned | ratio |", "|---|---|---|---|"]
    for k in keys:
        a, b = summary[k]["glibc_defaults"], summary[k]["tuned"]
        lines.append(f"| {k.replace('_', ' ')} | {a:,.1f} | {b:,.1f} | {a / b:.2f}x |")
    atomic.write_text(os.path.join(ROOT, "benchmarks", "results", "allocator.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
