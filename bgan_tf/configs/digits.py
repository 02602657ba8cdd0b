"""Offline default: scikit-learn's 1,797 handwritten digits, 32 bits.

Command:  python -m bgan_tf.train            (same as --config digits)
Cost:     about 2-4 minutes on 2 CPU cores (small conv net from scratch,
          neighbourhood graph from pixels, small generator/discriminator).
Result:   prints mAP@all and mAP@100 of BGAN next to ITQ on the same pixels for
          200 held-out queries; `make demo` / scripts/demo.sh reruns it, and
          benchmarks/results/digits_demo.json holds the last measured numbers
          (mAP@all 0.849 against ITQ's 0.668).
"""

from bgan_tf.config import LOSS_PRESETS, BGANConfig


ARGS = ("",)


def get_config(arg: str = "") -> BGANConfig:
    return BGANConfig(
        dataset="digits",
        image_size=32,
        backbone="small_cnn",
        backbone_input_size=32,
        graph_features="pixels",
        num_bits=32,
        k1=20,
        k2=30,
        gen_channels=(64, 32, 16),
        disc_channels=(16, 32, 64, 64),
        disc_feature_dim=128,
        batch_size=64,
        epochs=20,
        output_dir="runs/digits",
    ).replace(**LOSS_PRESETS["paper"])
