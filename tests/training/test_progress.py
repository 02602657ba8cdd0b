"""Training progress off a terminal: one line per epoch, no progress bar (issue 28, item 6)."""

from __future__ import annotations

import io

import keras
import numpy as np

from bgan_tf.training.progress import EpochLine, fit_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_fit_progress_bar_only_at_a_terminal_or_when_verbose():
    """verbose 1 (the default) shows Keras' bar at a terminal and EpochLine elsewhere;
    2 (train --verbose) the bar everywhere; 0 nothing."""
    assert fit_progress(1, _Terminal()) == (1, [])
    verbose, callbacks = fit_progress(1, io.StringIO())
    assert verbose == 0 and [type(c) for c in callbacks] == [EpochLine]
    assert fit_progress(2, io.StringIO()) == (1, [])
    assert fit_progress(0, io.StringIO()) == (0, [])


def test_epoch_line_prints_one_line_per_epoch_with_the_losses():
    """A Keras fit with EpochLine writes exactly one line an epoch (epoch, seconds, the
    logged losses) and no backspace or carriage return (the demo's bar wrote 113,939)."""
    out = io.StringIO()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((8, 3), np.float32)
    model.fit(x, x[:, :1], epochs=3, batch_size=4, verbose=0, callbacks=[EpochLine(out)])
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(line.split("  ")[1].endswith(" s") and line.split("  ")[2].startswith("loss ") for line in lines)
    assert "\b" not in out.getvalue() and "\r" not in out.getvalue()
