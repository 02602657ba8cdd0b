"""Serve an index over HTTP: `python -m bgan_tf.serve --index DIR [--model MODEL_DIR] --port 8000`.

Loads the index and its model (refusing a mismatch), builds the FastAPI app
(bgan_tf.service.create_app) and runs it with uvicorn on --host (loopback by default).
"""

from __future__ import annotations

import logging

from absl import flags

from bgan_tf import indexing, search
from bgan_tf.errors import UserError, cli_run
from flags import search_flags
from flags.search_flags import define_service_flags

define_service_flags()
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    # absl routes Python logging at INFO; FAISS's loader would print ten lines per run.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.index:
        raise UserError("missing --index")
    import uvicorn

    from bgan_tf.service import create_app

    search.set_num_threads(FLAGS.threads)
    encoder = indexing.load_model(indexing.model_for_index(FLAGS.index, FLAGS.model))
    extra = {"backend": FLAGS.backend, **_knobs()} if FLAGS["backend"].present else {}
    index = indexing.open_index(FLAGS.index, encoder, **extra)
    application = create_app(index, encoder, max_upload_bytes=FLAGS.max_upload_bytes,
                             allowed_types=FLAGS.allowed_types, max_k=FLAGS.max_k,
                             search_threads=FLAGS.workers_threads, max_batch=FLAGS.max_batch)
    print(f"serving {len(index)} images on http://{FLAGS.host}:{FLAGS.port}/", flush=True)
    # One process: the index and the model are loaded once; the batching thread
    # does the heavy work. uvloop/httptools are used when installed (uvicorn's "auto").
    uvicorn.run(application, host=FLAGS.host, port=FLAGS.port, log_level="warning", access_log=False)


def _knobs() -> dict:
    if FLAGS.backend == "ivf":
        return {"nlist": FLAGS.nlist, "nprobe": FLAGS.nprobe}
    if FLAGS.backend == "hnsw":
        return {"M": FLAGS.hnsw_m, "ef_search": FLAGS.ef_search}
    if FLAGS.backend == "multihash":
        return {"nhash": FLAGS.nhash or None, "b": FLAGS.hash_bits or None,
                "nflip": FLAGS.nflip if FLAGS.nflip >= 0 else None}
    return {}


def run() -> None:
    cli_run(main, search_flags)


if __name__ == "__main__":
    run()
