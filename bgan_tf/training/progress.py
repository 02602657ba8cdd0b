"""Training progress on stdout: Keras' progress bar at a terminal, one line per epoch elsewhere.

Keras redraws its progress bar with backspaces and carriage returns at every step. At a
terminal that is one live line; written to a file or a pipe (CI logs, `demo.sh > log`)
every redraw stays: the demo's stdout was 270 KB, 113,939 of it backspaces. Off a
terminal `EpochLine` prints instead, once an epoch:

    epoch 3/30  4.2 s  loss_e 0.4127  quant 0.0312

`fit_progress(verbose)` picks between them for `model.fit`:
- 0: nothing;
- 1: the Keras bar when stdout is a terminal, else `EpochLine` (the default);
- 2: the Keras bar wherever stdout goes (`train --verbose`).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import keras


class EpochLine(keras.callbacks.Callback):
    """Prints ``epoch E/N  S s  name value ...`` at the end of each epoch: the logged losses,
    in the order the model logs them."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = time.perf_counter() - self._start
        epochs = (self.params or {}).get("epochs")
        parts = [f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""), f"{seconds:.1f} s"]
        for name, value in (logs or {}).items():
            try:
                parts.append(f"{name} {float(value):.4f}")
            except (TypeError, ValueError):  # a non-scalar log entry: not a loss, leave it out
                continue
        stream = self._stream or sys.stdout  # looked up now: tests and callers may swap sys.stdout
        stream.write("  ".join(parts) + "\n")
        stream.flush()


def fit_progress(verbose: int, stream: TextIO | None = None) -> tuple[int, list[keras.callbacks.Callback]]:
    """(the ``verbose`` to pass to ``model.fit``, callbacks to add) for a verbosity of
    0 (silent), 1 (bar at a terminal, else one line per epoch) or 2 (the Keras bar always)."""
    if verbose <= 0:
        return 0, []
    out = stream or sys.stdout
    if verbose >= 2 or (hasattr(out, "isatty") and out.isatty()):
        return 1, []
    return 0, [EpochLine(stream)]
