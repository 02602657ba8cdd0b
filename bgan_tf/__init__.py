"""bgan_tf: Binary Generative Adversarial Networks (Song et al., AAAI 2018) in Keras 3.

Learns compact binary codes for images without labels and uses them for
Hamming-distance image retrieval. The Python API (`bgan_tf.api`):

    model = bgan_tf.load_model("runs/photos/model")
    codes = model.encode(["a.jpg", pixels])          # +-1 float32 [N, L]
    rows = bgan_tf.open_index("my_index").search("q.jpg", k=10)

Importing bgan_tf imports nothing else (no TensorFlow): the two functions are looked
up on first use (PEP 562 ``__getattr__``). Bazel: every module's target depends on this
file's (//:core), so //:core cannot depend on //:api without a cycle; the lazy
``importlib.import_module`` keeps that edge out of BUILD (tools/bazel/sync_build.py reads
import statements only), and a Bazel target that calls bgan_tf.load_model depends on
//:api. tests/test_architecture.py does see the edge and checks its direction.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model", "open_index"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("bgan_tf.api"), name)
    raise AttributeError(f"module 'bgan_tf' has no attribute {name!r}")
