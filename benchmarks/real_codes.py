"""Codes of a trained model for benchmarks/search_speed.py --codes.

    .venv/bin/python benchmarks/real_codes.py --model MODEL_DIR --out codes.npy

Encodes scikit-learn's 1,797 digits (32x32 RGB, as training reads them) with
the model folder and saves signs {-1,+1} float32 [1797, L] plus the labels
(`<out>.labels.npy`). Real codes of a real model, at their true count: to time
search at 1M, search_speed.py --expand_to tiles them with bit-flip noise (and
says so in its output).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bgan_tf.data.sources import load_digits  # noqa: E402
from bgan_tf.inference.keras_model import load_encoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    data = load_digits(32)
    enc = load_encoder(args.model)
    signs = enc.encode(data.images)
    np.save(args.out, signs.astype(np.float32))
    np.save(os.path.splitext(args.out)[0] + ".labels.npy", data.labels)
    uniq = len(np.unique(signs, axis=0))
    print(f"{len(signs)} codes of {signs.shape[1]} bits from model {enc.model_id}: {uniq} distinct -> {args.out}")


if __name__ == "__main__":
    main()
