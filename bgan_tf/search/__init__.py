"""Finding images by code: the persistent index, its backends, the indexer and the service.

- `store`: what an index keeps on disk (packed codes, ids, metadata, manifest), saved
  whole through `bgan_tf.atomic`.
- `backend_base`: the `SearchBackend` interface, thread settings, knob bounds and the
  helpers every backend shares (it imports no backend).
- `backends`: the registry (`BACKEND_NAMES`, `make_backend`, which imports a backend's
  module when asked for it) and the exact backends (FAISS flat, numpy, our C popcount
  scan in `hamming_c`); `approximate`: IVF, HNSW and multi-index hashing; `milvus`: a
  Milvus collection.
- `binary_index`: `BinaryIndex`, a store plus a backend, safe for concurrent readers.
- `indexer`: build an index from an image folder (resumable, locked) and query it.
- `service`: the FastAPI app behind ``python -m bgan_tf.serve`` (page in ``static/``);
  `limits`: the bounds of its settings, shared with the serve flags.

To add a backend: implement `backend_base.SearchBackend` (add, remove, search) in a
module that imports `backend_base`, never `backends`; name it in `BACKEND_NAMES` and
import its module in `backends.backend_class`. Imports inference, data and the shared
modules only.
"""
