"""The one place that defines absl flags for every bgan_tf binary.

Each binary calls one ``define_*_flags()`` at import time and turns the
parsed flags into a config with a ``*_from_flags()`` helper, so the flag
names, defaults and help texts live here only.
"""

from __future__ import annotations

from flags import train_flags  # noqa: F401
from flags.train_flags import config_from_flags, define_train_flags  # noqa: F401
