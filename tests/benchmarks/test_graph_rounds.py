"""benchmarks/graph_rounds.py's statistics of a graph, on a hand-made one."""

import os
import sys

import numpy as np

# realpath: under Bazel this file is a symlink into the source tree, where benchmarks/ is.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))),
                                "benchmarks"))
import graph_rounds  # noqa: E402


def _keys(pairs, n):
    both = [(i, j) for i, j in pairs] + [(j, i) for i, j in pairs] + [(i, i) for i in range(n)]
    return np.unique(np.array([i * n + j for i, j in both], np.int64))


def test_graph_stats_of_a_small_graph():
    # Six images, classes 0 0 1 1 2 2. Pairs: (0,1) right, (2,3) right, (0,2) wrong (classes 0-1),
    # (1,3) wrong (0-1), (0,4) wrong (0-2); image 5 has no positive.
    labels = np.array([0, 0, 1, 1, 2, 2])
    keys = _keys([(0, 1), (2, 3), (0, 2), (1, 3), (0, 4)], 6)
    s = graph_rounds.graph_stats(keys, 6, labels)
    assert s["precision"] == round(4 / 10, 4)  # the diagonal is not a pair
    assert s["pairs_per_item"] == round(10 / 6, 1)
    # Per image: 0 -> 1/3, 1 -> 1/2, 2 -> 1/2, 3 -> 1/2, 4 -> 0; image 5 has none and is left out.
    assert s["per_image_precision"] == round((1 / 3 + 0.5 * 3 + 0) / 5, 4)
    assert s["images_below_0.2"] == round(1 / 5, 4)
    assert s["images_without_positive"] == round(1 / 6, 4)
    # Class recall: class 0 has 2 ordered same-class pairs, both positive; class 2 none.
    assert s["class_recall"] == [1.0, 1.0, 0.0]
    assert s["class_recall_min"] == 0.0
    # Busiest tenth of 6 images = 1 image (image 0, 3 of the 10 pairs).
    assert s["top10_share"] == 0.3
    # Every wrong pair is on class pairs 0-1 (4 ordered) or 0-2 (2): all within the top 5.
    assert s["wrong_top5_share"] == 1.0


def test_wrong_pairs_spread_over_more_class_pairs_than_the_top_five():
    # Seven images of seven classes; six wrong pairs, each on its own class pair: the top five hold 5/6.
    keys = _keys([(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6)], 7)
    s = graph_rounds.graph_stats(keys, 7, np.arange(7))
    assert s["precision"] == 0.0
    assert s["wrong_top5_share"] == round(5 / 6, 4)
