"""Scoring codes for retrieval: protocols, metrics, baselines and reports.

- `retrieval_metrics`: Hamming-ranking metrics (mAP@all, mAP@K, P@K, R@K,
  precision-recall over radii, P@r<=2), single- and multi-label, chunked; ties are scored
  by their exact expectation over random order, computed in `tie_aware`.
- `protocols`: seeded splits (CIFAR-10 P-BGAN and 10k/50k, NUS-WIDE-21, MIRFlickr-25K,
  the class-balanced hold-out).
- `baselines`: LSH, PCAH, ITQ and float cosine, fitted on the same features.
- `inputs`: evaluation data, the split and the parsed options of ``python -m bgan_tf.evaluate``.
- `evaluator`: encode queries and database with a model, score it next to the baselines.
- `quick`: the train binary's closing check (held-out queries, BGAN vs ITQ).
- `report`: the report folder (metrics.json, plots, example grids, index.md).

To add a metric: compute it in `retrieval_metrics` (from the tie groups of `tie_aware`)
and add its key to the report's table. To add a protocol: a split in `protocols` and its
name in `inputs.PROTOCOL_NAMES`. Imports inference, data, modeling and the shared modules.
"""
