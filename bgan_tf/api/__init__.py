"""The Python API: ``bgan_tf.load_model(path).encode(...)`` and ``bgan_tf.open_index(path).search(...)``.

    import bgan_tf
    model = bgan_tf.load_model("runs/photos/model")
    codes = model.encode(["a.jpg", "b.png", pixels])   # +-1 float32 [3, L]; any mix of sizes
    index = bgan_tf.open_index("my_index")             # the model it records, from any folder
    for row in index.search("query.jpg", k=10):
        print(row.id, row.distance, row.metadata["path"])

- `handles`: `load_model` -> `Model`, `open_index` -> `Index`, through exactly what
  ``python -m bgan_tf.index`` runs, so their codes equal the CLI's bit for bit.
- `query_encoder_build`: `write_query_encoder`, the verified float TFLite copy `index
  build` keeps in an index (read back by `search.query_encoder`).

Imports search, serving (the TFLite conversion), inference and below; nothing imports it
but `bgan_tf/__init__.py` (lazily) and the binaries.
"""

from bgan_tf.api.handles import Index, Model, load_model, open_index
from bgan_tf.api.query_encoder_build import write_query_encoder

__all__ = ["Index", "Model", "load_model", "open_index", "write_query_encoder"]
