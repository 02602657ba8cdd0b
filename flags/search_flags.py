"""absl flags of the search binaries (`python -m bgan_tf.index`, `python -m bgan_tf.serve`)."""

from __future__ import annotations

from absl import flags

from bgan_tf.data import images as data
from bgan_tf.search import backends as search
from bgan_tf.search import limits

# What one request may ask for: results of a query, images decoded at once in a build.
MAX_QUERY_K = 10_000
MAX_BATCH_SIZE = 1024

_BACKENDS = list(search.BACKEND_NAMES)


def _define_common() -> None:
    # Both binaries use these; define once even if both define_* functions run.
    # Every numeric knob is bounded at parse time (one error line, exit 2); the backend
    # constructors check the same bounds, so library callers are refused too.
    if "index" in flags.FLAGS:
        return
    flags.DEFINE_string("index", None, "Folder of the binary index to build, query or serve.")
    flags.DEFINE_string("model", None, "Trained model folder, an exported .tflite encoder (python -m export.tflite), or the pixel-lsh:BITS[:SEED] baseline: what encodes images.")
    flags.DEFINE_enum("backend", "flat", _BACKENDS, "Search backend: flat/ours_exact/numpy are exact, ivf/hnsw/multihash approximate.")
    flags.DEFINE_integer("threads", 1, "Threads for FAISS and the C scan (1 is fastest on shared CI cores).",
                         lower_bound=1, upper_bound=search.MAX_THREADS)
    flags.DEFINE_integer("nlist", 1024, "ivf backend: number of inverted lists (capped at codes/39).",
                         lower_bound=1, upper_bound=search.MAX_NLIST)
    flags.DEFINE_integer("nprobe", 32, "ivf backend: lists visited per query.",
                         lower_bound=1, upper_bound=search.MAX_NLIST)
    flags.DEFINE_integer("hnsw_m", 32, "hnsw backend: graph links per node.",
                         lower_bound=1, upper_bound=search.MAX_HNSW_M)
    flags.DEFINE_integer("ef_search", 128, "hnsw backend: candidate list size per query (raised to k).",
                         lower_bound=1, upper_bound=search.MAX_EF)
    flags.DEFINE_integer("nhash", 0, "multihash backend: number of hash tables (0 = per code length: 2 at 32 bits, 4 at 16 and 64).",
                         lower_bound=0, upper_bound=search.MAX_NHASH)
    flags.DEFINE_integer("hash_bits", 0, "multihash backend: bits per hash key (0 = per code length: 16 at 32 and 64 bits, 4 at 16, 24 above 96).",
                         lower_bound=0, upper_bound=search.MAX_HASH_BITS)
    flags.DEFINE_integer("nflip", -1, "multihash backend: bit flips probed per hash key (-1 = per code length: 2 up to 16-bit keys, 1 for 24-bit).",
                         lower_bound=-1, upper_bound=search.MAX_NFLIP)


def define_index_flags() -> None:
    """Flags of `python -m bgan_tf.index build|query`."""
    _define_common()
    flags.DEFINE_string("images", None, "build: folder of images to index (class subfolders become labels).")
    flags.DEFINE_integer("batch_size", 64, "build: images encoded per model call (each is held decoded meanwhile).",
                         lower_bound=1, upper_bound=MAX_BATCH_SIZE)
    flags.DEFINE_integer("save_every", 1000, "build: save the index atomically after this many new images.",
                         lower_bound=1)
    flags.DEFINE_boolean("progress", True, "build: show a progress bar on stderr.")
    flags.DEFINE_string("image", None, "query: image file whose neighbours to find.")
    flags.DEFINE_integer("k", 10, f"query: number of neighbours to return (at most {MAX_QUERY_K:,}, "
                         "and never more than the index holds).", lower_bound=1, upper_bound=MAX_QUERY_K)
    flags.DEFINE_boolean("json", False, "query: print results as JSON instead of a table.")
    if "max_pixels" not in flags.FLAGS:  # the service may define the same budget
        flags.DEFINE_integer("max_pixels", data.DEFAULT_MAX_PIXELS,
                             "Largest image (width x height) decoded; build skips (and counts) larger "
                             "files, query refuses a larger image.", lower_bound=1)


def define_service_flags() -> None:
    """Flags of `python -m bgan_tf.serve`."""
    _define_common()
    b = limits.LIMITS  # the bounds create_app checks
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (loopback by default; 0.0.0.0 exposes it).")
    flags.DEFINE_integer("port", 8000, "TCP port to listen on (0 picks a free one and prints it).",
                         lower_bound=0, upper_bound=65535)
    flags.DEFINE_integer("max_upload_bytes", 10 * 1024 * 1024, "Largest accepted upload; bigger ones get HTTP 413.",
                         lower_bound=b["max_upload_bytes"][0], upper_bound=b["max_upload_bytes"][1])
    if "max_pixels" in flags.FLAGS:
        # Also a flag of the index binary (with the CLI's larger default): the service
        # shares the flag but keeps its own default.
        flags.FLAGS.set_default("max_pixels", limits.DEFAULT_MAX_PIXELS)
    else:
        flags.DEFINE_integer("max_pixels", limits.DEFAULT_MAX_PIXELS,
                             "Largest image an upload may be, in pixels, read from its header before decoding; "
                             "bigger ones get HTTP 413 (smaller than the CLI's default: many clients share "
                             "the server).", lower_bound=b["max_pixels"][0], upper_bound=b["max_pixels"][1])
    flags.DEFINE_list("allowed_types", ["image/jpeg", "image/png", "image/gif", "image/bmp", "image/webp"],
                      "Accepted upload content types (image/*); others get HTTP 415.")
    flags.DEFINE_integer("max_k", 100, "Largest k a client may ask for.",
                         lower_bound=b["max_k"][0], upper_bound=b["max_k"][1])
    flags.DEFINE_integer("workers_threads", 2, "Threads that decode uploads off the event loop.",
                         lower_bound=b["search_threads"][0], upper_bound=b["search_threads"][1])
    flags.DEFINE_integer("max_batch", 64, "Most waiting queries encoded and searched together in one model/index call.",
                         lower_bound=b["max_batch"][0], upper_bound=b["max_batch"][1])
    flags.register_validator(
        "allowed_types", _valid_types,
        message="--allowed_types must list at least one image/* content type, e.g. image/jpeg,image/png")


def _valid_types(types: list[str] | None) -> bool:
    # An empty list would start a service that refuses every upload with 415.
    import re

    types = [t.strip().lower() for t in (types or []) if t.strip()]
    return bool(types) and all(re.fullmatch(r"image/[a-z0-9][a-z0-9.+-]*", t) for t in types)
