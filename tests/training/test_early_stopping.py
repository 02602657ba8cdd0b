"""Early stopping on a held-out slice of the graph (--early_stopping_patience): the metric
it monitors, the images it holds out, when it stops, which weights it keeps and that a
rerun does not train on."""

import numpy as np
import pytest

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from bgan_tf.evaluation.retrieval_metrics import evaluate_codes, map_with_relevance
from testlib import TINY_TRAIN


def test_map_with_relevance_equals_the_label_path_and_skips_queries_without_relevant_items():
    rng = np.random.default_rng(0)
    q, db = np.sign(rng.normal(size=(30, 16))), np.sign(rng.normal(size=(200, 16)))
    ql, dbl = rng.integers(0, 4, 30), rng.integers(0, 4, 200)
    want = evaluate_codes(q, db, ql, dbl, pr_curve=False)["map_all"]
    assert map_with_relevance(q, db, ql[:, None] == dbl[None, :]) == pytest.approx(want, abs=1e-12)
    # A query with no relevant item is left out (the label path would count it as 0).
    rel = np.zeros((2, 200), bool)
    rel[0, :5] = True
    db_near = db.copy()
    db_near[:5] = q[0]  # its relevant items at distance 0, alone there: AP 1
    assert map_with_relevance(q[:2], db_near, rel) == pytest.approx(1.0)
    assert np.isnan(map_with_relevance(q[:2], db, np.zeros((2, 200), bool)))
    with pytest.raises(ValueError, match="relevance"):
        map_with_relevance(q, db, np.zeros((3, 200), bool))


def test_training_batches_hold_only_the_given_items_once_per_pass():
    from bgan_tf.data.pipeline import training_dataset

    images = np.zeros((20, 32, 32, 3), np.float32)
    x = np.arange(20, dtype=np.float32)[:, None]
    items = np.array([1, 3, 4, 8, 9, 10, 15, 19])
    for flip in (False, True):
        ds = training_dataset(images, x, 4, 0, 0, 2, flip=flip, mirrored_inputs=x if flip else None, items=items)
        seen = [b["index"].numpy() for b in ds]
        assert len(seen) == 4  # 2 passes x 8 items / batch 4
        for p in (0, 1):
            np.testing.assert_array_equal(np.sort(np.concatenate(seen[2 * p:2 * p + 2])), items)
        for b in ds.take(1):  # each batch's inputs are its items' rows
            np.testing.assert_array_equal(b["x"].numpy()[:, 0], b["index"].numpy())


def test_holdout_split_is_seeded_disjoint_and_off_by_default():
    from bgan_tf.training.trainer import early_stopping_split

    cfg = BGANConfig(**TINY_TRAIN).replace(early_stopping_patience=2, early_stopping_holdout=0.1)
    held, rows = early_stopping_split(cfg, 200)
    assert held.size == 20 and rows.size == 180 and not np.intersect1d(held, rows).size
    np.testing.assert_array_equal(held, early_stopping_split(cfg, 200)[0])
    assert not np.array_equal(held, early_stopping_split(cfg.replace(seed=1), 200)[0])
    held_off, rows_off = early_stopping_split(cfg.replace(early_stopping_patience=0), 200)
    assert held_off.size == 0 and rows_off.size == 200


def _stopper(tmp_path, scores, patience):
    """A GraphEarlyStopping around a one-weight model whose 'score' after epoch e is scores[e]."""
    import keras

    from bgan_tf.training.callbacks import GraphEarlyStopping

    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    stopper = GraphEarlyStopping(None, None, None, np.zeros((1, 1), bool), patience, str(tmp_path / "best"),
                                 {"net": net})
    stopper.set_model(net)
    it = iter(scores)
    stopper.score = lambda: next(it)
    return stopper, net


def test_stops_after_patience_epochs_without_gain_and_restores_the_best_weights(tmp_path):
    stopper, net = _stopper(tmp_path, [0.1, 0.3, 0.2, 0.3, 0.25], patience=3)
    net.stop_training = False
    epoch = 0
    while not net.stop_training:
        net.layers[0].kernel.assign([[float(epoch)]])  # the "weights" trained in epoch `epoch`
        logs = {}
        stopper.on_epoch_end(epoch, logs)
        assert logs["val_graph_map"] is not None
        epoch += 1
    # Best 0.3 after epoch 2; 0.2, 0.3 (no gain over 0.3), 0.25 -> three epochs without one.
    assert epoch == 5 and stopper.stopped and int(stopper.best_epoch.numpy()) == 2
    assert float(net.layers[0].kernel.numpy()[0, 0]) == 4.0
    assert stopper.restore_best() == 2
    assert float(net.layers[0].kernel.numpy()[0, 0]) == 1.0  # the weights of epoch index 1


def test_state_survives_a_checkpoint_so_a_resume_stops_where_it_would_have(tmp_path):
    import tensorflow as tf

    stopper, _ = _stopper(tmp_path, [0.5, 0.4], patience=2)
    stopper.on_epoch_end(0, {})
    stopper.on_epoch_end(1, {})
    path = tf.train.Checkpoint(es=stopper.state).save(str(tmp_path / "ck" / "c"))
    resumed, _ = _stopper(tmp_path, [0.45], patience=2)
    tf.train.Checkpoint(es=resumed.state).restore(path)
    assert not resumed.stopped and int(resumed.waited.numpy()) == 1
    resumed.on_epoch_end(2, {})
    assert resumed.stopped and int(resumed.best_epoch.numpy()) == 1


def test_training_with_early_stopping_keeps_the_best_epoch_and_a_rerun_trains_no_more(tmp_path):
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.trainer import train

    data = load_digits().subset(np.arange(200))
    # (With the GAN: the kept networks include G and D.)
    cfg = BGANConfig(**TINY_TRAIN).replace(epochs=5, steps_per_epoch=3, early_stopping_patience=1,
                                           early_stopping_holdout=0.2, output_dir=str(tmp_path / "run"))
    res = train(cfg, data, verbose=0)
    scores = res.history["val_graph_map"]
    assert len(scores) == res.epochs_trained == res.epochs_run and 1 <= res.epochs_trained <= 5
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert res.best_epoch == int(np.argmax(scores)) + 1
    if res.epochs_trained < 5:  # it stopped: exactly `patience` epochs after the best one
        assert res.epochs_trained == res.best_epoch + 1
    again = train(cfg, data, verbose=0)
    assert again.epochs_run == 0 and again.best_epoch == res.best_epoch


def test_a_holdout_that_leaves_too_few_images_is_refused():
    from bgan_tf.training.trainer import check_data_fits

    cfg = BGANConfig(**TINY_TRAIN).replace(early_stopping_patience=2, early_stopping_holdout=0.5)
    with pytest.raises(UserError, match="--early_stopping_holdout"):
        check_data_fits(cfg, 20)  # 10 left for batches of 16
    check_data_fits(cfg, 40)
    with pytest.raises(UserError, match="--early_stopping_holdout"):
        BGANConfig(**TINY_TRAIN).replace(early_stopping_holdout=0.0).validate()
