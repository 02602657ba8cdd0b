"""benchmarks/gan_widths.py: the table multiplies each size's step time out to a 6-epoch
run and relates it to the config widths; the skip without weights; the bounds."""

import os
import sys

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import gan_widths  # noqa: E402


def test_render_multiplies_out_and_compares():
    rows = {"nbr_only (no G, D)": {"seconds_per_step": 0.5, "use_gan": False, "gen_channels": [1, 1],
                                   "disc_channels": [1, 1], "disc_feature_dim": 1},
            "config widths": {"seconds_per_step": 2.0, "use_gan": True, "gen_channels": [32, 32, 16],
                              "disc_channels": [16, 32, 64, 64], "disc_feature_dim": 256}}
    text = gan_widths.render({"command": "c", "machine": "m", "date": "d", "loadavg_at_start": [1.0],
                              "warmup": 2, "steps": 4, "rows": rows})
    assert "| nbr_only (no G, D) | - | - | 0.500 | 0.13 | 0.2x |" in text
    assert f"| config widths | 32-32-16 | 16-32-64-64, 256 | 2.000 | {2.0 * 936 / 3600:.2f} | 1.0x |" in text


def test_skips_without_weights_and_refuses_bad_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["gan_widths.py", "--weights", str(tmp_path / "absent.h5")])
    assert gan_widths.main() == 0
    assert capsys.readouterr().out.startswith("SKIP:")
    monkeypatch.setattr(sys, "argv", ["gan_widths.py", "--steps", "0"])
    assert gan_widths.main() == 2
