"""The train binary's closing check: BGAN vs ITQ on the held-out queries.

The train binary holds out class-balanced queries (`protocols.holdout_split`) and
trains BGAN on the rest (the database); then `quick_evaluate` ranks the database for
every query by Hamming distance and scores it next to ITQ fitted on the same
features the neighbourhood graph used.
"""

from __future__ import annotations

import dataclasses

from bgan_tf.config import BGANConfig
from bgan_tf.data.sources import ImageData
from bgan_tf.errors import UserError


@dataclasses.dataclass
class QuickEval:
    rows: dict[str, dict[str, float]]  # method -> {"map_all", "map_at_K"}
    num_queries: int
    num_database: int
    map_k: int

    def table(self) -> str:
        lines = [f"{'method':<12} {'mAP@all':>8} {f'mAP@{self.map_k}':>9}"]
        for name, r in self.rows.items():
            lines.append(f"{name:<12} {r['map_all']:>8.4f} {r[f'map_at_{self.map_k}']:>9.4f}")
        return "\n".join(lines)


def quick_evaluate(model_dir: str, config: BGANConfig, query: ImageData, database: ImageData,
                   map_k: int = 100) -> QuickEval:
    """BGAN codes vs ITQ on the graph features, query vs database."""
    from bgan_tf.evaluation.baselines import make_baseline
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes
    from bgan_tf.data.features import graph_features

    if query.labels is None or database.labels is None:
        raise UserError("evaluation needs labels (class subfolders, TFDS labels or an npz 'labels' array)")
    enc = load_encoder(model_dir)
    q_codes, db_codes = enc.encode(query.images), enc.encode(database.images)
    k = min(map_k, len(database))
    rows = {}
    m = evaluate_codes(q_codes, db_codes, query.labels, database.labels, topk=(k,), pr_curve=False)
    rows["BGAN"] = {"map_all": m["map_all"], f"map_at_{map_k}": m["map_at"][k]}
    feats_db = graph_features(config, database, None)
    feats_q = graph_features(config, query, None)
    itq = make_baseline("ITQ", config.num_bits, config.seed).fit(feats_db)
    m = evaluate_codes(itq.encode(feats_q), itq.encode(feats_db), query.labels, database.labels, topk=(k,),
                       pr_curve=False)
    rows["ITQ"] = {"map_all": m["map_all"], f"map_at_{map_k}": m["map_at"][k]}
    return QuickEval(rows, len(query), len(database), map_k)

