"""Serve an index over HTTP: `python -m bgan_tf.serve --index DIR [--model MODEL_DIR] --port 8000`.

Binds --host:--port first (a busy port is one error line, before the index is
loaded), loads the index and its model (refusing a mismatch), builds the FastAPI
app (bgan_tf.search.service.create_app) and runs it with uvicorn on that socket; the
"serving ..." line is printed only once the socket is listening.

Security model (docs/search.md, "What the service may read and allocate"): the service
reads only regular files inside the index's recorded image root (symlinks leaving it,
absolute or `..` paths in the metadata: 404; --no_images: none), answers only Host names
in --allowed_hosts, and a client can make it allocate at most --max_upload_bytes per
body (counted while it streams), --max_pixels per image and --pixel_budget decoded
pixels across all uploads at once, k <= --max_k, batches <= --max_batch.
POST /reload re-reads --index from disk (a running server does not watch it).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys

from absl import flags

from bgan_tf.inference.encoders import load_model
from bgan_tf.search import indexer as indexing
from bgan_tf.search import backend_base
from bgan_tf.errors import UserError, cli_run
from flags import common, search_flags
from flags.search_flags import define_service_flags

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    # absl routes Python logging at INFO; FAISS's loader would print ten lines per run.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.index:
        raise UserError("missing --index")
    max_pixels = search_flags.service_max_pixels()
    pixel_budget = search_flags.service_pixel_budget(max_pixels)
    import uvicorn

    from bgan_tf.search.service import create_app

    # Before the (possibly slow) model load: a busy port fails in a second, not after it.
    sock = bind_socket(FLAGS.host, FLAGS.port)
    try:
        backend_base.set_num_threads(FLAGS.threads)
        encoder = load_model(indexing.model_for_index(FLAGS.index, FLAGS.model))
        options = search_flags.open_options()
        index = indexing.open_index(FLAGS.index, encoder, **options)
        # POST /reload re-reads the index the same way (a running server otherwise never
        # sees an updated index); create_app refuses one of another model.
        application = create_app(index, encoder, max_upload_bytes=FLAGS.max_upload_bytes,
                                 allowed_types=FLAGS.allowed_types, max_k=FLAGS.max_k,
                                 search_threads=FLAGS.workers_threads, max_batch=FLAGS.max_batch,
                                 max_pixels=max_pixels, pixel_budget=pixel_budget,
                                 allowed_hosts=search_flags.service_hosts(), serve_images=not FLAGS.no_images,
                                 api_docs=FLAGS.api_docs,
                                 reload=lambda: indexing.open_index(FLAGS.index, encoder, **options))
        sock.listen(2048)  # uvicorn's default backlog; clients queue from here on
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {len(index)} images on http://{shown}:{port}/", flush=True)
        if FLAGS.host in ("0.0.0.0", "::") and not FLAGS.allowed_hosts:
            # Otherwise a client using the machine's name or address gets 421 and wonders why.
            print("note: only requests with Host localhost, 127.0.0.1 or ::1 are answered; pass "
                  "--allowed_hosts with the names clients use", file=sys.stderr, flush=True)
        # One process: the index and the model are loaded once; the batching thread
        # does the heavy work. uvloop/httptools are used when installed (uvicorn's "auto").
        config = uvicorn.Config(application, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening); UserError when that fails."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserError(f"cannot listen on --host {host!r}: {e.strerror}; pass an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    # As uvicorn does: a restart need not wait for the old connections' TIME_WAIT. A port
    # another process listens on still fails to bind.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use on {host}; stop the process using it or pass another --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def run() -> None:
    define_service_flags()
    cli_run(main, search_flags, common)


if __name__ == "__main__":
    run()
