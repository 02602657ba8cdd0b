"""Report folder: files, valid JSON, table, grids, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from bgan_tf.errors import UserError
from bgan_tf.evaluation.report import (
    RIGHT_COLOUR,
    WRONG_COLOUR,
    reconstruction_grid,
    retrieval_grid,
    write_report,
)
from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, evaluate_float


def _beside(folder) -> list[str]:
    """What is next to the report, but the writers' lock file (atomic.output_lock keeps it)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".rep.lock")


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=220)
    feats = np.eye(3)[labels] * 2 + rng.normal(size=(220, 3)) * 0.7
    feats = np.concatenate([feats, rng.normal(size=(220, 5))], axis=1)
    codes = np.where(feats @ rng.normal(size=(8, 8)) >= 0, 1.0, -1.0)
    kw = dict(topk=(10, 100))
    return {
        "LSH 8 bits": evaluate_codes(codes[:20], codes[20:], labels[:20], labels[20:], **kw),
        "float cosine": evaluate_float(feats[:20], feats[20:], labels[:20], labels[20:], **kw),
    }


def test_write_report_files_json_and_table(tmp_path, results):
    images = (np.random.default_rng(1).random((5, 8, 8, 3)) * 255).astype(np.uint8)
    grid = retrieval_grid(images[:2], images, np.array([[0, 1, 2], [3, 4, 0]]), np.array([[1, 0, 1], [0, 0, 1]]))
    out = write_report(
        tmp_path / "rep",
        results,
        example_grid=grid,
        reconstructions=(images, images[::-1]),
        title="Test report",
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "index.md",
        "metrics.json",
        "pr_curve.png",
        "precision_at_k.png",
        "reconstructions.png",
        "retrieval_examples.png",
    ]
    data = json.loads((out / "metrics.json").read_text())
    assert data["title"] == "Test report"
    assert data["results"]["LSH 8 bits"]["map_all"] == pytest.approx(results["LSH 8 bits"]["map_all"])
    assert data["results"]["LSH 8 bits"]["map_at"]["10"] == pytest.approx(results["LSH 8 bits"]["map_at"][10])
    for png in ("pr_curve.png", "precision_at_k.png", "reconstructions.png", "retrieval_examples.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 10
    with Image.open(out / "reconstructions.png") as im:
        assert im.size == (5 * 8 + 4 * 2, 2 * 8 + 2)
    md = (out / "index.md").read_text()
    assert md.startswith("# Test report")
    assert "| method | mAP@all | mAP@10 | mAP@100 | P@r<=2 | empty balls |" in md
    lsh_row = next(line for line in md.splitlines() if line.startswith("| LSH 8 bits"))
    assert f"{results['LSH 8 bits']['map_all']:.4f}" in lsh_row
    float_row = next(line for line in md.splitlines() if line.startswith("| float cosine"))
    assert float_row.rstrip().endswith("| – | – |")  # no radius metrics for floats
    for png in ("pr_curve.png", "precision_at_k.png", "reconstructions.png", "retrieval_examples.png"):
        assert f"]({png})" in md
    # No temp folders left next to the report.
    assert _beside(tmp_path) == ["rep"]


def test_write_report_replaces_existing_atomically(tmp_path, results):
    out = tmp_path / "rep"
    write_report(out, results)
    (out / "stale.txt").write_text("from an older run")
    write_report(out, {"only": results["LSH 8 bits"]}, title="Second")
    assert not (out / "stale.txt").exists()
    assert list(json.loads((out / "metrics.json").read_text())["results"]) == ["only"]
    assert _beside(tmp_path) == ["rep"]
    # Without pictures the optional PNGs are simply absent.
    assert not (out / "retrieval_examples.png").exists()


def test_failed_write_keeps_the_old_report(tmp_path, results):
    out = tmp_path / "rep"
    write_report(out, results, title="First")
    with pytest.raises(UserError):
        write_report(out, results, reconstructions=(np.zeros((2, 4, 4, 3)), np.zeros((3, 4, 4, 3))))
    assert (out / "index.md").read_text().startswith("# First")
    assert _beside(tmp_path) == ["rep"]
    with pytest.raises(UserError, match="no results"):
        write_report(out, {})


def test_retrieval_grid_marks_wrong_results_red():
    img = np.full((3, 6, 6, 3), 100, dtype=np.uint8)
    grid = retrieval_grid(img[:1], img, np.array([[0, 1, 2]]), np.array([[True, False, True]]), border=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    cell = 6 + 4
    assert grid.shape[0] == cell
    x0 = cell + 10  # after the query and the gap
    corners = [tuple(grid[0, x0 + j * (cell + 2)]) for j in range(3)]
    assert corners == [RIGHT_COLOUR, WRONG_COLOUR, RIGHT_COLOUR]
    # The image inside the frame is untouched.
    assert tuple(grid[5, x0 + (cell + 2) + 5]) == (100, 100, 100)
    with pytest.raises(UserError, match="\\[Q, k\\]"):
        retrieval_grid(img[:1], img, np.array([[0, 1]]), np.array([[True]]))


def test_reconstruction_grid_rows_and_grayscale_float_input():
    a = np.zeros((2, 4, 4))
    b = np.ones((2, 4, 4))
    grid = reconstruction_grid(a, b, spacing=1)
    assert grid.shape == (9, 9, 3)
    assert grid[:4, :4].max() == 0 and grid[5:, :4].min() == 255
