"""Named configs (big_vision style): each module's docstring says the command,
what it costs and what it should reach; ``get_config()`` returns a BGANConfig."""

from __future__ import annotations

import importlib

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError

NAMES = ("digits", "cifar10")


def get_config(name: str) -> BGANConfig:
    if name not in NAMES:
        raise UserError(f"unknown --config {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(f"bgan_tf.configs.{name}").get_config()
