"""Evaluation report folder: metrics JSON, plots, image grids and an index.md page.

Why a folder written atomically: a report is read by people (index.md renders on
GitHub and in most editors) and by scripts (metrics.json); a half-written folder
after a crash would mix runs. The folder goes through `atomic.staged_dir`: built next
to its destination and swapped into place, replacing an older report. A report is
recognised by its metrics.json (with "results") and index.md (`is_report_dir`); any
other non-empty folder, or a file, is refused untouched (`check_report_dir` says so
before a slow evaluation starts).

Layout of `out_dir`:
  metrics.json            the results dict as given (numpy converted, keys as strings), and
                          "reconstruction": PSNR/SSIM of G(code) or why they are missing
  pr_curve.png            precision vs recall over Hamming radii, one line per method
  precision_at_k.png      precision@K per method (log K axis)
  retrieval_examples.png  optional: top-k retrieved per query, wrong ones in red
  reconstructions.png     optional: originals (top row) vs reconstructions (bottom row)
  index.md                title, table (method x mAP@all, mAP@K, P@r<=radius), images

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend
change), so this module is safe to import from servers and tests.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bgan_tf import atomic
from bgan_tf.errors import UserError

REPORT_WHAT = "report folder"

WRONG_COLOUR = (220, 20, 20)  # irrelevant retrieved item
RIGHT_COLOUR = (190, 190, 190)  # relevant retrieved item
QUERY_COLOUR = (30, 60, 200)


# ---------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------


def _rgb_uint8(images: np.ndarray, what: str) -> np.ndarray:
    """[N, H, W], [N, H, W, 1|3] uint8 or float in [0, 1] -> uint8 [N, H, W, 3]."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
        raise UserError(f"{what} must be images [N, H, W] or [N, H, W, 1|3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def _framed(image: np.ndarray, colour: tuple[int, int, int], border: int) -> np.ndarray:
    h, w, _ = image.shape
    out = np.empty((h + 2 * border, w + 2 * border, 3), dtype=np.uint8)
    out[:] = colour
    out[border : border + h, border : border + w] = image
    return out


def retrieval_grid(
    query_images: np.ndarray,
    db_images: np.ndarray,
    ranked_ids: np.ndarray,
    relevant_mask: np.ndarray,
    *,
    border: int = 3,
    spacing: int = 2,
    query_gap: int = 10,
) -> np.ndarray:
    """One row per query: the query (blue frame), then its ranked database images,
    each framed red if irrelevant (wrong) or light grey if relevant.

    query_images [Q, H, W(, C)]; db_images [N, H, W(, C)] (uint8, or float in [0, 1]);
    ranked_ids int [Q, k] into db_images; relevant_mask bool [Q, k].
    Returns a uint8 RGB image. Why a frame rather than a tint: the picture stays
    readable and the mistakes stand out at a glance.
    """
    q_img = _rgb_uint8(query_images, "query images")
    d_img = _rgb_uint8(db_images, "database images")
    ids = np.asarray(ranked_ids)
    rel = np.asarray(relevant_mask).astype(bool)
    if ids.ndim != 2 or ids.shape != rel.shape or ids.shape[0] != q_img.shape[0]:
        raise UserError(
            f"ranked_ids {ids.shape} and relevant_mask {rel.shape} must both be [Q, k] with Q = {q_img.shape[0]}"
        )
    if q_img.shape[1:] != d_img.shape[1:]:
        raise UserError(f"query images {q_img.shape[1:]} and database images {d_img.shape[1:]} differ in size")
    if ids.size and (ids.min() < 0 or ids.max() >= d_img.shape[0]):
        raise UserError(f"ranked_ids must index the {d_img.shape[0]} database images")
    n_q, k = ids.shape
    h, w = q_img.shape[1] + 2 * border, q_img.shape[2] + 2 * border
    width = w + query_gap + k * w + max(k - 1, 0) * spacing
    height = n_q * h + max(n_q - 1, 0) * spacing
    canvas = np.full((max(height, 1), max(width, 1), 3), 255, dtype=np.uint8)
    for i in range(n_q):
        y = i * (h + spacing)
        canvas[y : y + h, 0:w] = _framed(q_img[i], QUERY_COLOUR, border)
        for j in range(k):
            x = w + query_gap + j * (w + spacing)
            colour = RIGHT_COLOUR if rel[i, j] else WRONG_COLOUR
            canvas[y : y + h, x : x + w] = _framed(d_img[ids[i, j]], colour, border)
    return canvas


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, *, spacing: int = 2) -> np.ndarray:
    """Two rows: originals on top, their reconstructions (e.g. G(E(x))) below."""
    a = _rgb_uint8(originals, "originals")
    b = _rgb_uint8(reconstructions, "reconstructions")
    if a.shape != b.shape:
        raise UserError(f"originals {a.shape} and reconstructions {b.shape} must have the same shape")
    n, h, w, _ = a.shape
    width = n * w + max(n - 1, 0) * spacing
    canvas = np.full((2 * h + spacing, max(width, 1), 3), 255, dtype=np.uint8)
    for j in range(n):
        x = j * (w + spacing)
        canvas[:h, x : x + w] = a[j]
        canvas[h + spacing :, x : x + w] = b[j]
    return canvas


# ---------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> bool:
    """PR curve over Hamming radii, one line per method that has one; False if none."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for name, res in results.items():
        pr = res.get("pr_curve")
        if not pr:
            continue
        ax.plot(pr["recall"], pr["precision"], marker=".", label=name)
        drawn = True
    if not drawn:
        return False
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall over Hamming radius 0..L")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_precision_at_k(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> bool:
    """precision@K per method, log-scaled K; False if no method has the curve."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    drawn = False
    for name, res in results.items():
        pk = res.get("precision_at_k")
        if not pk or not pk.get("k"):
            continue
        ax.plot(pk["k"], pk["precision"], marker=".", label=name)
        drawn = True
    if not drawn:
        return False
    ax.set_xscale("log")
    ax.set_xlabel("K (number of retrieved items)")
    ax.set_ylabel("precision@K")
    ax.set_title("Precision of the top K")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


# ---------------------------------------------------------------------------
# Report folder
# ---------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf
    return obj


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{v:.4f}" if math.isfinite(v) else "–"


def _table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    ks = sorted({int(k) for res in results.values() for k in (res.get("map_at") or {})})
    radii = sorted({int(res["radius"]) for res in results.values() if res.get("radius") is not None})
    rad = f"P@r<={radii[0]}" if len(radii) == 1 else "P@r<=radius"
    head = ["method", "mAP@all"] + [f"mAP@{k}" for k in ks] + [rad, "empty balls"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        map_at = {int(k): v for k, v in (res.get("map_at") or {}).items()}
        row = [str(name).replace("|", "\\|"), _fmt(res.get("map_all"))]
        row += [_fmt(map_at.get(k)) for k in ks]
        row += [_fmt(res.get("precision_at_radius")), _fmt(res.get("empty_ball_fraction"))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _quality_lines(quality: Mapping[str, Any] | None) -> list[str]:
    if quality is None:
        return []
    lines = ["## Reconstruction quality", ""]
    if "skipped" in quality:
        return lines + [f"Not measured: {quality['skipped']}.", ""]
    return lines + [
        f"G(code) against {quality.get('images', 'the query images')} ({quality['num_images']} images at "
        f"{quality['resolution']}x{quality['resolution']}, pixels in [0, 1]):", "",
        "| PSNR (dB) mean | median | SSIM mean | median |", "|---|---|---|---|",
        f"| {_fmt(quality['psnr_db'])} | {_fmt(quality['psnr_db_median'])} | {_fmt(quality['ssim'])} "
        f"| {_fmt(quality['ssim_median'])} |", ""]


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(_rgb_uint8(image[None], "image")[0]).save(path)


def is_report_dir(path: str | os.PathLike) -> bool:
    """A report folder write_report made: index.md and a metrics.json holding "results"."""
    p = Path(path)
    if not (p / "index.md").is_file():
        return False
    try:
        with open(p / "metrics.json", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "results" in data


def check_report_dir(out_dir: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """UserError (nothing touched) unless ``out_dir`` can take a report: absent, empty or an
    earlier report, and outside every input (model folder, image folders)."""
    atomic.check_disjoint(out_dir, *inputs, what="report folder")
    return atomic.claim_output(out_dir, REPORT_WHAT, is_report_dir)


def write_report(
    out_dir: str | os.PathLike,
    results: Mapping[str, Mapping[str, Any]],
    *,
    example_grid: np.ndarray | None = None,
    reconstructions: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None,
    reconstruction_quality: Mapping[str, Any] | None = None,
    title: str = "Retrieval evaluation",
    notes: str | None = None,
) -> Path:
    """Write (or replace) the report folder `out_dir` whole; returns its path.

    `out_dir` must be absent, an empty folder or an earlier report (UserError otherwise,
    nothing touched); temp folders of killed writers beside it are removed.

    results: method name -> metrics dict from `evaluate_codes` / `evaluate_float`
    (extra keys are kept in metrics.json). example_grid: an image from
    `retrieval_grid`. reconstructions: (originals, reconstructions) image arrays, or a
    ready image from `reconstruction_grid`. reconstruction_quality: PSNR/SSIM of
    G(code) (`reconstruction.reconstruction_quality`) or {"skipped": reason}. notes: Markdown put under the title
    (protocol, seed, features used...).
    """
    if not results:
        raise UserError("no results to report: pass at least one method's metrics")
    with atomic.staged_dir(out_dir, what=REPORT_WHAT, is_ours=is_report_dir) as tmp:
        with open(tmp / "metrics.json", "w", encoding="utf-8") as f:
            doc = {"title": title, "results": _jsonable(results)}
            if reconstruction_quality is not None:
                doc["reconstruction"] = _jsonable(reconstruction_quality)
            json.dump(doc, f, indent=2, allow_nan=False)
            f.write("\n")
        images: list[tuple[str, str]] = []
        if plot_pr_curves(results, tmp / "pr_curve.png"):
            images.append(("Precision-recall (Hamming radius 0..L)", "pr_curve.png"))
        if plot_precision_at_k(results, tmp / "precision_at_k.png"):
            images.append(("Precision@K", "precision_at_k.png"))
        if example_grid is not None:
            _save_png(np.asarray(example_grid), tmp / "retrieval_examples.png")
            images.append(("Top retrieved images (query framed blue; wrong results framed red)", "retrieval_examples.png"))
        if reconstructions is not None:
            grid = (
                reconstruction_grid(*reconstructions)
                if isinstance(reconstructions, tuple)
                else np.asarray(reconstructions)
            )
            _save_png(grid, tmp / "reconstructions.png")
            images.append(("Reconstructions (top: originals, bottom: reconstructed)", "reconstructions.png"))
        lines = [f"# {title}", ""]
        if notes:
            lines += [notes, ""]
        lines += _table(results)
        lines += [
            "",
            "mAP@K: AP over the top K, averaged over queries; ties in Hamming distance count as "
            "randomly ordered (exact expectation). P@r<=radius: precision among items within the "
            "Hamming radius; a query with an empty ball counts 0 (\"empty balls\" is the fraction "
            "of such queries). Full numbers: [metrics.json](metrics.json).",
            "",
        ]
        lines += _quality_lines(reconstruction_quality)
        for caption, name in images:
            lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
        (tmp / "index.md").write_text("\n".join(lines), encoding="utf-8")
    return Path(out_dir)
