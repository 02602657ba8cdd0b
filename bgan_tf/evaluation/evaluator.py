"""Retrieval evaluation of a trained model folder on a seeded protocol split.

What `evaluate_model` measures: the model's codes of the split's queries ranked
against its database by Hamming distance (`retrieval_metrics.evaluate_codes`:
mAP@all, mAP@K, P@K/R@K, PR over radii, P@r<=2, tie-aware), next to baselines
fitted on the split's TRAINING items with the SAME features the model's
neighbourhood graph used (pixels for graph_features=pixels, otherwise the frozen
backbone's features with the weights named in the model's config.json): LSH, PCAH,
ITQ at the model's code length, and float cosine ranking of those features (the
reference the codes compress). It also draws the top-10 retrieved images of a few
queries (wrong ones framed red) and, when the model has a generator, originals next
to G(code) and PSNR/SSIM of G(code) against every query image
(`reconstruction.reconstruction_quality`; the queries are the held-out images).

Why the split comes from the protocol and the seed (`inputs.build_split`): numbers
are comparable only on the same split, and the holdout protocol with the training
seed reproduces exactly the queries `python -m bgan_tf.train` held out, so the model
never saw them. The model folder's metadata keeps a fingerprint of its training
images; the evaluation compares it with the split's training set and says in the
report whether they match.

Encoding: images go through `LoadedEncoder.encode`. With a frozen pretrained
backbone the codes come from `encode_features` on the cached backbone features
instead (the features training cached; much faster, and reused by the baselines);
a few items are encoded both ways first and the fast path is used only when the
codes are identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from bgan_tf.data.images import resize_uint8
from bgan_tf.data.pipeline import images_for_gan
from bgan_tf.data.sources import ImageData
from bgan_tf.errors import UserError
from bgan_tf.evaluation.inputs import BASELINE_CHOICES, DEFAULT_MAP_AT, parse_baselines
from bgan_tf.evaluation.protocols import Split

MODEL_NAME = "BGAN"
FLOAT_NAME = "float cosine"
MAX_EXAMPLES = 100  # example-grid rows: 100 x (1 + top_k) images of >= 64 px is ~50 MB of RGB
MAX_TOP_K = 100
REPORT_KEYS = ("results", "example_grid", "reconstructions", "reconstruction_quality", "title", "notes")
_FAST_PATH_CHECK = 16  # items encoded both ways before trusting encode_features


# ---------------------------------------------------------------------------
# Codes and features
# ---------------------------------------------------------------------------


def _encode(enc, config, data: ImageData, idx: np.ndarray,
            use_cached_features: bool = True) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Codes of data[idx]; also the backbone features when the fast path computed them."""
    feats = None
    # Not with trainable_from: its pooled features are the pretrained backbone's, not the tuned one's.
    if use_cached_features and config.freeze_backbone and not config.trainable_from and config.backbone_weights:
        from bgan_tf.data.features import cached_features
        from bgan_tf.modeling.factory import backbone_spec

        feats = cached_features(data.images, backbone_spec(config), data.fingerprint(), config.feature_cache_dir)
        probe = idx[:_FAST_PATH_CHECK]
        if np.array_equal(enc.encode(data.images[probe]), enc.encode_features(feats[probe])):
            return enc.encode_features(feats[idx]), feats, "encode_features (cached frozen-backbone features)"
        logging.warning("codes from cached backbone features differ from codes of the images; encoding images")
    return enc.encode(data.images[idx]), feats, "encode (images)"


def _feature_description(config) -> str:
    """What `graph_features` gives for this config, as the report names it."""
    if config.graph_features == "pixels":
        return f"pixels ({config.image_size}x{config.image_size}x3 in [0,1])"
    return f"{config.backbone} features ({config.backbone_weights}, {config.backbone_input_size}px)"


# ---------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------


def _display(images: np.ndarray, lo: int = 64, hi: int = 128) -> np.ndarray:
    """uint8 (or [0,1] float) images scaled for a legible grid: small ones enlarged
    by an integer factor (sharp pixels), large ones shrunk."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    size = max(arr.shape[1:3])
    if size < lo:
        f = -(-lo // size)
        return np.repeat(np.repeat(arr, f, axis=1), f, axis=2)
    if size > hi and arr.shape[1] == arr.shape[2]:
        return np.stack([resize_uint8(im, hi) for im in arr])
    return arr


def _relevant(q_lab: np.ndarray, db_lab: np.ndarray) -> np.ndarray:
    """q_lab [Q(, C)], db_lab [Q, k(, C)] -> bool [Q, k]."""
    if q_lab.ndim == 1:
        return db_lab == q_lab[:, None]
    return ((db_lab > 0) & (q_lab[:, None, :] > 0)).any(axis=-1)


def example_queries(num_queries: int, num_examples: int) -> np.ndarray:
    """Positions of the example queries: spread evenly over the query list."""
    n = min(int(num_examples), int(num_queries))
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, num_queries - 1, n).round().astype(np.int64))


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def evaluate_model(
    model_dir: str,
    data: ImageData,
    split: Split,
    *,
    baselines: Sequence[str] = BASELINE_CHOICES,
    map_at: Sequence[int] | None = None,
    num_examples: int = 8,
    top_k: int = 10,
    num_reconstructions: int = 8,
    radius: int = 2,
    use_cached_features: bool = True,
    encoder=None,
) -> dict[str, Any]:
    """Evaluate the model folder on `data` split by `split`.

    Returns a dict whose keys REPORT_KEYS are write_report's arguments
    (`report.write_report(out, **{k: ev[k] for k in REPORT_KEYS})`, or
    `write_evaluation_report(out, ev)`):
      results: method -> metrics dict (`evaluate_codes`, `evaluate_float` for float
        cosine), the model first as "BGAN"; each entry also holds how it was made.
      example_grid: uint8 image (top-`top_k` of `num_examples` queries) or None.
      reconstructions: (originals, G(code)) uint8 images, or None without generator.
      reconstruction_quality: PSNR/SSIM of G(code) on the queries, or {"skipped": why}.
      title, notes: report title and Markdown notes (split, features, checks).
    and `info`: the same facts as a dict (model id, split sizes, paths taken).
    use_cached_features=False always encodes images (no frozen-backbone fast path).
    encoder: the folder's LoadedEncoder when the caller already loaded it (the binary
    does, so a broken weights file fails before the data is read).
    """
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.inference.model_folder import read_model_files
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes

    if not os.path.isdir(model_dir):
        raise UserError(f"model folder not found: {model_dir}")
    _check_pictures(num_examples, num_reconstructions, top_k)
    config, metadata = read_model_files(model_dir)
    baselines = parse_baselines(baselines)
    _check_split(data, split)
    ks = tuple(int(k) for k in (map_at if map_at is not None else DEFAULT_MAP_AT.get(split.name, ())))
    rel_labels = split.labels_for_relevance(data.labels)
    q_lab, db_lab = rel_labels[split.query], rel_labels[split.database]

    enc = encoder if encoder is not None else load_encoder(model_dir)
    needed = np.union1d(split.query, split.database)
    codes, backbone_feats, encode_path = _encode(enc, config, data, needed, use_cached_features)
    q_codes = codes[np.searchsorted(needed, split.query)]
    db_codes = codes[np.searchsorted(needed, split.database)]

    results: dict[str, dict[str, Any]] = {}
    m = evaluate_codes(q_codes, db_codes, q_lab, db_lab, topk=ks, radius=radius)
    m["method"] = {"model_dir": os.path.abspath(model_dir), "model_id": enc.model_id, "encode": encode_path}
    results[MODEL_NAME] = m

    feature_desc = None
    if baselines:
        feature_desc = _feature_description(config)
        results.update(_baseline_results(baselines, config, data, split, backbone_feats, enc.num_bits,
                                         (q_lab, db_lab), ks, radius, feature_desc))

    # Pictures: top-k of a few queries, and reconstructions of the same queries.
    shown = example_queries(split.query.size, num_examples)
    example_grid = _example_grid(data, split, shown, q_codes, db_codes, (q_lab, db_lab), top_k)
    reconstructions, quality = _reconstructions(model_dir, config.image_size, data.images[split.query], q_codes,
                                                shown, num_reconstructions)

    info = {"model_dir": os.path.abspath(model_dir), "model_id": enc.model_id, "num_bits": enc.num_bits,
            "protocol": split.name, "seed": split.seed, "sizes": split.sizes(), "map_at": list(ks),
            "encode": encode_path, "baseline_features": feature_desc,
            "training_data_matches": _training_data_matches(metadata, data, split)}
    results[MODEL_NAME]["split"] = {k: info[k] for k in ("protocol", "seed", "sizes", "training_data_matches")}
    return {
        "results": results, "example_grid": example_grid, "reconstructions": reconstructions,
        "reconstruction_quality": quality,
        "title": f"Retrieval evaluation: {os.path.basename(os.path.dirname(os.path.abspath(model_dir)))}"
                 f"/{os.path.basename(os.path.abspath(model_dir))} ({enc.num_bits} bits) on {split.name}",
        "notes": _notes(info, metadata, top_k),
        "info": info,
    }


def _check_pictures(num_examples: int, num_reconstructions: int, top_k: int) -> None:
    if not 0 <= num_examples <= MAX_EXAMPLES or not 0 <= num_reconstructions <= MAX_EXAMPLES:
        raise UserError(f"--num_examples must be from 0 to {MAX_EXAMPLES}, got {num_examples}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise UserError(f"top_k must be from 1 to {MAX_TOP_K}, got {top_k}")


def _example_grid(data: ImageData, split: Split, shown: np.ndarray, q_codes: np.ndarray, db_codes: np.ndarray,
                  labels: tuple, top_k: int) -> np.ndarray | None:
    """The top-``top_k`` database images of the ``shown`` queries as one image, or None."""
    from bgan_tf.evaluation.report import retrieval_grid
    from bgan_tf.evaluation.retrieval_metrics import top_k_hamming

    if not shown.size:
        return None
    q_lab, db_lab = labels
    ids, _ = top_k_hamming(q_codes[shown], db_codes, top_k)
    rel = _relevant(q_lab[shown], db_lab[ids])
    uniq, inverse = np.unique(ids, return_inverse=True)
    return retrieval_grid(_display(data.images[split.query[shown]]), _display(data.images[split.database[uniq]]),
                          inverse.reshape(ids.shape), rel)


def _reconstructions(model_dir: str, image_size: int, query_images: np.ndarray, q_codes: np.ndarray,
                     shown: np.ndarray, num_reconstructions: int) -> tuple[tuple | None, dict[str, Any]]:
    """((originals, G(code)) of the shown queries, or None; PSNR/SSIM of G(code) on the
    queries, or {"skipped": why} without a generator)."""
    from bgan_tf.evaluation.reconstruction import NO_GENERATOR, reconstruction_quality
    from bgan_tf.inference.keras_model import load_generator

    gen = load_generator(model_dir)
    if gen is None:
        return None, {"skipped": NO_GENERATOR}
    quality = reconstruction_quality(gen, q_codes, images_for_gan(query_images, image_size))
    quality["images"] = f"the split's queries (up to the first {quality['num_images']})"
    rec_pos = (shown if shown.size else example_queries(len(query_images), num_reconstructions))[:num_reconstructions]
    if not rec_pos.size:
        return None, quality
    originals = images_for_gan(query_images[rec_pos], image_size)
    recon = np.asarray(gen(q_codes[rec_pos], training=False))
    return (_display(originals), _display(recon)), quality


def _training_data_matches(metadata: dict, data: ImageData, split: Split) -> bool | None:
    """Whether the split's training set is what the model was trained on (None: unknown)."""
    trained_on = (metadata.get("training_data") or {}).get("fingerprint")
    split_fp = data.subset(split.train).fingerprint() if split.train.size else None
    return None if trained_on is None or split_fp is None else trained_on == split_fp


def _check_split(data: ImageData, split: Split) -> None:
    """UserError for unlabelled data or a split that does not fit it."""
    if data.labels is None:
        raise UserError("evaluation needs labels (class subfolders, TFDS labels or an npz 'labels' array)")
    n = len(data)
    for what, idx in (("query", split.query), ("database", split.database), ("training", split.train)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise UserError(f"the split's {what} indices do not fit the {n} images; build it from these labels")
    if split.query.size == 0 or split.database.size == 0:
        raise UserError("the split needs at least one query and one database item")


def _baseline_results(baselines: Sequence[str], config, data: ImageData, split: Split, backbone_feats,
                      num_bits: int, labels: tuple, ks: tuple[int, ...], radius: int,
                      feature_desc: str) -> dict[str, dict[str, Any]]:
    """method -> metrics of each baseline on the config's graph features (float cosine on
    the features themselves; the hashing baselines fit on the split's training items)."""
    from bgan_tf.data.features import graph_features
    from bgan_tf.evaluation.baselines import make_baseline
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, evaluate_float

    q_lab, db_lab = labels
    feats = graph_features(config, data, backbone_feats)
    f_train, f_q, f_db = feats[split.train], feats[split.query], feats[split.database]
    results: dict[str, dict[str, Any]] = {}
    for name in baselines:
        if name == "float_cosine":
            m = evaluate_float(f_q, f_db, q_lab, db_lab, topk=ks)
            m["method"] = {"features": feature_desc}
            results[FLOAT_NAME] = m
            continue
        model = make_baseline(name, num_bits, config.seed).fit(f_train)
        m = evaluate_codes(model.encode(f_q), model.encode(f_db), q_lab, db_lab, topk=ks, radius=radius)
        m["method"] = {"features": feature_desc, "fit_on": f"{split.train.size} training items",
                       "num_bits": num_bits, "seed": config.seed}
        results[name] = m
    return results


def _notes(info: dict[str, Any], metadata: dict, top_k: int) -> str:
    s = info["sizes"]
    match = info["training_data_matches"]
    if match is None:
        check = "not checked (no fingerprint)"
    elif match:
        check = "yes: the split's training set is exactly the model's training data, so no query was seen"
    else:
        check = ("**no**: the model was trained on other images (queries may have been seen in training); "
                 "use the training --seed, --dataset and --max_images, or another protocol")
    lines = [
        f"- model: `{info['model_dir']}` (id `{info['model_id']}`, {info['num_bits']} bits, "
        f"trained on `{(metadata.get('training_data') or {}).get('dataset', '?')}`)",
        f"- protocol `{info['protocol']}`, seed {info['seed']}: {s['query']} queries, {s['database']} database "
        f"items, {s['train']} training items (baselines are fitted on these)",
        f"- split training set = model's training data: {check}",
        f"- model codes: {info['encode']}",
        f"- baseline features (those of the model's neighbourhood graph): {info['baseline_features'] or 'none'}",
        f"- example grid: top {top_k} by Hamming distance (ties broken by database order)",
    ]
    return "\n".join(lines)


def write_evaluation_report(out_dir: str, evaluation: dict[str, Any]):
    """Write the report folder of an `evaluate_model` result (atomic, see report.py);
    never inside or over the model folder it evaluated."""
    from bgan_tf.evaluation.report import check_report_dir, write_report

    check_report_dir(out_dir, (evaluation.get("info") or {}).get("model_dir"))
    return write_report(out_dir, **{k: evaluation[k] for k in REPORT_KEYS})


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: method x mAP@all, mAP@K..., P@r<=radius."""
    ks = sorted({int(k) for r in results.values() for k in (r.get("map_at") or {})})
    radii = sorted({int(r["radius"]) for r in results.values() if r.get("radius") is not None})
    rad = f"P@r<={radii[0]}" if len(radii) == 1 else "P@r<=radius"
    head = ["mAP@all"] + [f"mAP@{k}" for k in ks] + [rad]
    width = max([len("method")] + [len(n) for n in results]) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{h:>10}" for h in head)]

    def fmt(v) -> str:
        return f"{v:>10.4f}" if v is not None else f"{'-':>10}"

    for name, r in results.items():
        map_at = {int(k): v for k, v in (r.get("map_at") or {}).items()}
        cells = [r.get("map_all")] + [map_at.get(k) for k in ks] + [r.get("precision_at_radius")]
        lines.append(f"{name:<{width}}" + "".join(fmt(v) for v in cells))
    return "\n".join(lines)
