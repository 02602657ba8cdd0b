"""Finding images by code: the persistent index, its backends, the indexer and the service.

- `store`: what an index keeps on disk (packed codes, ids, metadata, manifest), saved
  whole through `bgan_tf.atomic`.
- `backends`: the `SearchBackend` interface, thread settings, the exact backends (FAISS
  flat, numpy, our C popcount scan in `hamming_c`), `BACKEND_NAMES` and `make_backend`;
  `approximate`: IVF, HNSW and multi-index hashing; `milvus`: a Milvus collection.
- `binary_index`: `BinaryIndex`, a store plus a backend, safe for concurrent readers.
- `indexer`: build an index from an image folder (resumable, locked) and query it.
- `service`: the FastAPI app behind ``python -m bgan_tf.serve`` (page in ``static/``);
  `limits`: the bounds of its settings, shared with the serve flags.

To add a backend: implement `backends.SearchBackend` (add, remove, search), name it in
`BACKEND_NAMES` and build it in `make_backend`. Imports inference, data and the shared
modules only.
"""
