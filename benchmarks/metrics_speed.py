"""Hand-run speed check of bgan_tf.evaluation.retrieval_metrics (not a test: timings vary by machine).

    .venv/bin/python benchmarks/metrics_speed.py [--queries 1000] [--database 59000] [--bits 32]

Times evaluate_codes on random codes and labels at the CIFAR-10 P-BGAN scale
(1,000 queries x 59,000 database items), with mAP@all, mAP@1000, P@K, PR curve and
precision within radius 2, and prints seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bgan_tf.evaluation.retrieval_metrics import evaluate_codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--database", type=int, default=59000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    signs = np.array([-1.0, 1.0], dtype=np.float32)
    q = rng.choice(signs, size=(args.queries, args.bits))
    db = rng.choice(signs, size=(args.database, args.bits))
    q_lab = rng.integers(0, args.classes, size=args.queries)
    db_lab = rng.integers(0, args.classes, size=args.database)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = evaluate_codes(q, db, q_lab, db_lab, topk=(1000,), chunk_size=args.chunk_size)
        times.append(time.perf_counter() - t0)
    print(
        f"evaluate_codes {args.queries} x {args.database} at {args.bits} bits: "
        f"best {min(times):.2f} s, median {float(np.median(times)):.2f} s over {args.repeats} runs "
        f"(mAP@all {res['map_all']:.4f}, mAP@1000 {res['map_at'][1000]:.4f})"
    )


if __name__ == "__main__":
    main()
