"""The README's main job, measured: train on digits with the defaults, record
mAP of BGAN and ITQ and the wall time into benchmarks/results/digits_demo.json.

    .venv/bin/python benchmarks/digits_demo.py [extra train flags]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    out = os.path.join(ROOT, "benchmarks", "work", "digits_demo")
    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resume
    cmd = [sys.executable, "-m", "bgan_tf.train", "--output_dir", out, *sys.argv[1:]]
    t = time.time()
    # The same environment as scripts/demo.sh (oneDNN on, TensorFlow's default).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(cmd, cwd=ROOT, check=True, env=env)
    wall = time.time() - t
    ev = json.load(open(os.path.join(out, "eval.json")))
    ev["wall_seconds"] = round(wall, 1)
    ev["command"] = "python -m bgan_tf.train " + " ".join(sys.argv[1:]) + "  (defaults: --config digits)"
    ev["machine"] = f"{platform.machine()}, {os.cpu_count()} cores; load average at end {os.getloadavg()[0]:.1f}"
    from bgan_tf import atomic

    atomic.write_json(os.path.join(ROOT, "benchmarks", "results", "digits_demo.json"), ev)
    print(json.dumps(ev["methods"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
