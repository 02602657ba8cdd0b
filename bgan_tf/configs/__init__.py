"""Named configs (big_vision style): each module's docstring says the command,
what it costs and what it should reach; ``get_config(arg)`` returns a BGANConfig.

``--config NAME`` or ``--config NAME:ARG``: ARG picks one of the module's variants
(its ``ARGS``), e.g. ``cifar10:finetune``. A new config is a module here with a
docstring, ``ARGS`` and ``get_config(arg="")``, plus its name in NAMES."""

from __future__ import annotations

import importlib

from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError

NAMES = ("digits", "cifar10")


def get_config(name: str) -> BGANConfig:
    module, _, arg = name.partition(":")
    if module not in NAMES:
        raise UserError(f"unknown --config {name!r}; choose one of {', '.join(NAMES)}")
    lib = importlib.import_module(f"bgan_tf.configs.{module}")
    if arg not in lib.ARGS:
        variants = ", ".join(f"{module}:{a}" for a in lib.ARGS if a) or "none"
        raise UserError(f"unknown --config {name!r}; the variants of {module} are: {variants}")
    return lib.get_config(arg)
