"""benchmarks/graph_quality.py on tiny synthetic data: pair statistics, the symmetrised kNN
graph, the constructions on separated clusters, the verdict text, the skip. The diffusion
itself is bgan_tf.training.diffusion's (tests/training/test_diffusion.py)."""

import os
import sys

import numpy as np
import pytest

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import graph_quality as gq  # noqa: E402

from bgan_tf.training.knn import knn  # noqa: E402
from testlib import separated_clusters  # noqa: E402


def test_pair_stats_by_hand():
    n, labels = 4, np.array([0, 0, 1, 1])
    keys = np.sort(np.array([0 * n + 1, 1 * n + 0, 0 * n + 2, 2 * n + 0, 3 * n + 3], np.int64))  # 3-3: diagonal
    stats = gq.pair_stats(keys, n, labels)
    assert stats == {"precision": 0.5, "pairs_per_item": 1.0, "recall": 0.5}  # 2 of 4 ordered same-class pairs


def test_knn_only_is_the_symmetrised_lists():
    x, _ = separated_clusters(per=30)
    n, k = x.shape[0], 4
    nbrs = knn(x, k)
    keys = gq.symmetric_keys(gq.pattern(nbrs, k))
    expected = set()
    for i in range(n):
        for j in nbrs[i]:
            expected |= {i * n + int(j), int(j) * n + i}
    assert set(keys.tolist()) == expected
    assert len(expected) > n * k  # some lists are one-sided: symmetrising added pairs


def test_diffusion_on_separated_clusters_is_exact_at_matched_density():
    x, labels = separated_clusters()
    rows = {r["construction"]: r for r in gq.constructions(x, labels, k1=5, k2=5, alphas=(0.9, 0.99), steps=10,
                                                            block=64)}
    assert set(rows) == {"knn_only", "k1k2", "knn_matched", "diffusion_a0.9", "diffusion_a0.99"}
    base = rows["k1k2"]["pairs_per_item"]
    for name in ("knn_matched", "diffusion_a0.9", "diffusion_a0.99"):
        assert abs(rows[name]["pairs_per_item"] - base) <= 1.0, name  # matched density
        assert rows[name]["p"] >= 1
    for name in ("diffusion_a0.9", "diffusion_a0.99"):
        assert rows[name]["precision"] == 1.0
        assert 0 < rows[name]["recall"] < 1
    assert rows["knn_only"]["pairs_per_item"] < base  # K2 expansion adds pairs


def _row(variant, construction, precision, ppi):
    return {"variant": variant, "construction": construction, "precision": precision, "pairs_per_item": ppi,
            "recall": 0.1, "seconds": 1.0}


def test_verdicts_follow_the_numbers():
    rows = [_row("128", "knn_only", 0.6, 30.0), _row("128", "k1k2", 0.40, 100.0),
            _row("128", "diffusion_a0.9", 0.45, 101.0), _row("160", "k1k2", 0.41, 150.0),
            _row("160", "diffusion_a0.9", 0.405, 150.0)]
    lines = gq.verdicts(rows)
    assert any(line.startswith("- 128 diffusion_a0.9: precision 0.4500") and line.endswith("clearly better.")
               for line in lines)
    assert not any("knn_only" in line for line in lines)  # not at k1k2's density
    assert any(line.startswith("- 160 diffusion_a0.9") and line.endswith("no clear difference.") for line in lines)
    assert any(line.startswith("- 160 k1k2") and "not a like-for-like comparison" in line for line in lines)
    rows[2]["precision"] = 0.41
    assert any(line.startswith("- 128 diffusion_a0.9") and line.endswith("no clear difference.")
               for line in gq.verdicts(rows))


def test_skips_without_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["graph_quality.py", "--data", str(tmp_path / "absent"),
                                      "--out", str(tmp_path / "out")])
    assert gq.main() == 0
    assert capsys.readouterr().out.startswith("SKIP: ")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("flag", ["--k1=0", "--block=100000", "--alphas=1.0", "--variants=96"])
def test_bounds_are_refused(flag, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["graph_quality.py", flag])
    with pytest.raises(SystemExit) as e:
        gq.main()
    assert e.value.code == 2


def test_render_states_settings_and_every_row():
    rows = [_row("128", "k1k2", 0.40, 100.0), {**_row("128", "diffusion_a0.99", 0.45, 101.0), "p": 80}]
    results = {"command": "cmd", "date": "d", "machine": "m", "loadavg_at_start": [1.0], "loadavg_at_end": [2.0],
               "items": 10000, "same_class_pairs": 9990000, "feature_seconds": {"128": 35.0},
               "settings": {"k1": 20, "k2": 30, "alphas": [0.99], "steps": 20, "seed": 0}, "rows": rows}
    text = gq.render(results)
    assert "0.99: 0.81" in text  # 0.99^21 of the series is beyond T
    assert "| 128 | diffusion_a0.99 | 0.4500 | 101.0 | 0.1000 | 80 | 1.0 |" in text
    assert "clearly better." in text


def test_main_writes_every_row_of_every_variant(tmp_path, monkeypatch):
    """main's glue on stand-ins for the data, the split and the backbone (no ../shared)."""
    import json
    import types

    import cifar10_pbgan

    from bgan_tf.evaluation import protocols

    x, labels = separated_clusters(per=60)
    monkeypatch.setattr(cifar10_pbgan, "load_cifar", lambda root: types.SimpleNamespace(
        images=np.zeros((len(labels), 2, 2, 3), np.uint8), labels=labels))
    monkeypatch.setattr(protocols, "cifar10_pbgan", lambda lab, seed: types.SimpleNamespace(train=np.arange(len(lab))))
    monkeypatch.setattr(gq, "variant_features", lambda images, weights, variants: {
        v: (x + 0.01 * i, 1.5) for i, v in enumerate(variants)})
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"")
    out = tmp_path / "res" / "graph_quality"
    monkeypatch.setattr(sys, "argv", ["graph_quality.py", "--data", str(tmp_path), "--weights", str(weights),
                                      "--out", str(out), "--k1=5", "--k2=5", "--steps=5", "--block=50",
                                      "--variants=128,160_flip"])
    assert gq.main() == 0
    res = json.load(open(str(out) + ".json"))
    assert [(r["variant"], r["construction"]) for r in res["rows"]] == [
        (v, c) for v in ("128", "160_flip") for c in ("knn_only", "k1k2", "knn_matched", "diffusion_a0.9",
                                                      "diffusion_a0.99")]
    assert res["settings"] == {"k1": 5, "k2": 5, "alphas": [0.9, 0.99], "steps": 5, "block": 50, "seed": 0,
                               "variants": ["128", "160_flip"]}
    assert res["items"] == len(labels) and res["feature_seconds"] == {"128": 1.5, "160_flip": 1.5}
    assert {"command", "date", "machine", "loadavg_at_start", "loadavg_at_end"} <= set(res)
    assert open(str(out) + ".md").read() == gq.render(res)
