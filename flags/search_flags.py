"""absl flags of the search binaries (`python -m bgan_tf.index`, `python -m bgan_tf.serve`).

``define_index_flags()`` / ``define_service_flags()`` are called by the binary before
parsing; the flags both binaries take (the index, the backend and its knobs) are
defined once here, ``--model``, ``--batch_size`` and ``--max_pixels`` in flags/common.py.
The helpers below turn parsed flags into what the library takes, for both binaries.
"""

from __future__ import annotations

from typing import Any

from absl import flags

from bgan_tf.data import images as data
from bgan_tf.errors import UserError
from bgan_tf.search import backend_base
from bgan_tf.search.backends import BACKEND_NAMES
from bgan_tf.search import limits
from flags import common

FLAGS = flags.FLAGS

# What one query may ask for.
MAX_QUERY_K = 10_000

_BACKENDS = list(BACKEND_NAMES)


def _define_search_flags(fv: flags.FlagValues) -> None:
    # Both binaries take these; defined once even if both define_* functions run.
    # Every numeric knob is bounded at parse time (one error line, exit 2); the backend
    # constructors check the same bounds, so library callers are refused too.
    if "index" in fv:
        return
    common.define_shared("model", flag_values=fv)
    flags.DEFINE_string("index", None, "Folder of the binary index to build, query or serve.", flag_values=fv)
    flags.DEFINE_enum("backend", "flat", _BACKENDS, "Search backend: flat/ours_exact/numpy are exact, ivf/hnsw/multihash approximate, milvus a Milvus collection.", flag_values=fv)
    flags.DEFINE_integer("threads", 1, "Threads for FAISS and the C scan (1 is fastest on shared CI cores).",
                         lower_bound=1, upper_bound=backend_base.MAX_THREADS, flag_values=fv)
    flags.DEFINE_integer("nlist", 1024, "ivf backend: number of inverted lists (capped at codes/39).",
                         lower_bound=1, upper_bound=backend_base.MAX_NLIST, flag_values=fv)
    flags.DEFINE_integer("nprobe", 32, "ivf backend: lists visited per query.",
                         lower_bound=1, upper_bound=backend_base.MAX_NLIST, flag_values=fv)
    flags.DEFINE_integer("hnsw_m", 32, "hnsw backend: graph links per node.",
                         lower_bound=1, upper_bound=backend_base.MAX_HNSW_M, flag_values=fv)
    flags.DEFINE_integer("ef_search", 128, "hnsw backend: candidate list size per query (raised to k).",
                         lower_bound=1, upper_bound=backend_base.MAX_EF, flag_values=fv)
    flags.DEFINE_integer("nhash", 0, "multihash backend: number of hash tables (0 = per code length: 2 at 32 bits, 4 at 16 and 64).",
                         lower_bound=0, upper_bound=backend_base.MAX_NHASH, flag_values=fv)
    flags.DEFINE_integer("hash_bits", 0, "multihash backend: bits per hash key (0 = per code length: 16 at 32 and 64 bits, 4 at 16, 24 above 96).",
                         lower_bound=0, upper_bound=backend_base.MAX_HASH_BITS, flag_values=fv)
    flags.DEFINE_integer("nflip", -1, "multihash backend: bit flips probed per hash key (-1 = per code length: 2 up to 16-bit keys, 1 for 24-bit).",
                         lower_bound=-1, upper_bound=backend_base.MAX_NFLIP, flag_values=fv)


def define_index_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Flags of `python -m bgan_tf.index build|query` (a second call is a no-op)."""
    fv = flag_values
    _define_search_flags(fv)
    if "images" in fv:
        return
    common.define_shared("batch_size", "max_pixels", flag_values=fv)
    flags.DEFINE_string("images", None, "build: folder of images to index (class subfolders become labels).",
                        flag_values=fv)
    flags.DEFINE_integer("save_every", 1000, "build: save the index atomically after this many new images.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("progress", True, "build: show a progress bar on stderr.", flag_values=fv)
    flags.DEFINE_string("image", None, "query: image file whose neighbours to find.", flag_values=fv)
    flags.DEFINE_integer("k", 10, f"query: number of neighbours to return (at most {MAX_QUERY_K:,}, "
                         "and never more than the index holds).", lower_bound=1, upper_bound=MAX_QUERY_K,
                         flag_values=fv)
    flags.DEFINE_boolean("json", False, "query: print results as JSON instead of a table.", flag_values=fv)


def define_service_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Flags of `python -m bgan_tf.serve` (a second call is a no-op)."""
    fv = flag_values
    _define_search_flags(fv)
    if "host" in fv:
        return
    common.define_shared("max_pixels", flag_values=fv)
    b, d = limits.LIMITS, limits.DEFAULTS  # the bounds and defaults of create_app
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (loopback by default; 0.0.0.0 exposes it).",
                        flag_values=fv)
    flags.DEFINE_integer("port", 8000, "TCP port to listen on (0 picks a free one and prints it).",
                         lower_bound=0, upper_bound=65535, flag_values=fv)
    flags.DEFINE_integer("max_upload_bytes", d["max_upload_bytes"], "Largest request body (chunked too, counted as it arrives); bigger ones get HTTP 413.",
                         lower_bound=b["max_upload_bytes"][0], upper_bound=b["max_upload_bytes"][1], flag_values=fv)
    flags.DEFINE_list("allowed_types", list(limits.DEFAULT_TYPES),
                      "Accepted upload content types (image/*); others get HTTP 415.", flag_values=fv)
    flags.DEFINE_integer("max_k", d["max_k"], "Largest k a client may ask for.",
                         lower_bound=b["max_k"][0], upper_bound=b["max_k"][1], flag_values=fv)
    flags.DEFINE_integer("workers_threads", d["search_threads"], "Threads that decode uploads off the event loop.",
                         lower_bound=b["search_threads"][0], upper_bound=b["search_threads"][1], flag_values=fv)
    flags.DEFINE_integer("max_batch", d["max_batch"], "Most waiting queries encoded and searched together in one model/index call.",
                         lower_bound=b["max_batch"][0], upper_bound=b["max_batch"][1], flag_values=fv)
    flags.DEFINE_integer("pixel_budget", None, "Decoded pixels in flight across all uploads (default "
                         f"{d['pixel_budget']:,}, or --max_pixels if larger; at least --max_pixels): more "
                         "concurrent uploads wait instead of taking memory.",
                         lower_bound=b["pixel_budget"][0], upper_bound=b["pixel_budget"][1], flag_values=fv)
    flags.DEFINE_list("allowed_hosts", [], "Host header values accepted, others get HTTP 421 (DNS rebinding). "
                      "Default: localhost, 127.0.0.1, ::1 and --host; '*' accepts any (behind a checking proxy).",
                      flag_values=fv)
    flags.DEFINE_boolean("no_images", False, "Serve no image file at all (GET /images answers 404). Otherwise only regular files inside the index's recorded image root are served.",
                         flag_values=fv)
    flags.DEFINE_boolean("api_docs", False, "Serve the OpenAPI page /docs and /openapi.json.", flag_values=fv)
    flags.register_validator(
        "allowed_types", _valid_types,
        message="--allowed_types must list at least one image/* content type, e.g. image/jpeg,image/png",
        flag_values=fv)


def _valid_types(types: list[str] | None) -> bool:
    # An empty list would start a service that refuses every upload with 415.
    types = [t.strip().lower() for t in (types or []) if t.strip()]
    return bool(types) and all(limits.is_image_type(t) for t in types)


def backend_knobs(flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """The parsed flags that configure --backend (keyword arguments of BinaryIndex.create)."""
    fv = flag_values
    if fv.backend == "ivf":
        return {"nlist": fv.nlist, "nprobe": fv.nprobe}
    if fv.backend == "hnsw":
        return {"M": fv.hnsw_m, "ef_search": fv.ef_search}
    if fv.backend == "multihash":
        return {"nhash": fv.nhash or None, "b": fv.hash_bits or None, "nflip": fv.nflip if fv.nflip >= 0 else None}
    return {}


def open_options(flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """Keyword arguments of indexer.open_index: --backend and its knobs when --backend was
    given, else none (the backend the index was built with)."""
    fv = flag_values
    return {"backend": fv.backend, **backend_knobs(fv)} if fv["backend"].present else {}


def index_batch_size(flag_values: flags.FlagValues = FLAGS) -> int:
    """index build's --batch_size (default common.INDEX_BATCH_SIZE, at most common.MAX_INDEX_BATCH_SIZE)."""
    value = flag_values["batch_size"].value
    if value is None:
        return common.INDEX_BATCH_SIZE
    if value > common.MAX_INDEX_BATCH_SIZE:
        raise UserError(f"--batch_size must be from 1 to {common.MAX_INDEX_BATCH_SIZE} for index build "
                        f"(images decoded at once), got {value}")
    return value


def index_max_pixels(flag_values: flags.FlagValues = FLAGS) -> int:
    """index's --max_pixels (default data.DEFAULT_MAX_PIXELS, the CLI's budget)."""
    value = flag_values["max_pixels"].value
    return data.DEFAULT_MAX_PIXELS if value is None else value


def service_max_pixels(flag_values: flags.FlagValues = FLAGS) -> int:
    """serve's --max_pixels (default and bounds: bgan_tf.search.limits, what create_app checks)."""
    value = flag_values["max_pixels"].value
    if value is None:
        return limits.DEFAULT_MAX_PIXELS
    lo, hi = limits.LIMITS["max_pixels"]
    if not lo <= value <= hi:
        raise UserError(f"--max_pixels must be from {lo:,} to {hi:,} for the service (Pillow refuses larger "
                        f"images), got {value:,}")
    return value


def service_pixel_budget(max_pixels: int, flag_values: flags.FlagValues = FLAGS) -> int:
    """serve's --pixel_budget (default: limits.DEFAULTS or max_pixels, whichever is larger)."""
    value = flag_values["pixel_budget"].value
    if value is None:
        return max(limits.DEFAULTS["pixel_budget"], max_pixels)
    if value < max_pixels:
        raise UserError(f"--pixel_budget ({value:,}) must be at least --max_pixels ({max_pixels:,})")
    return value


def service_hosts(flag_values: flags.FlagValues = FLAGS) -> list[str]:
    """The Host header values serve accepts: --allowed_hosts, else the loopback names and --host
    (a wildcard --host such as 0.0.0.0 is no name a client uses: pass --allowed_hosts then)."""
    fv = flag_values
    given = [h.strip() for h in fv.allowed_hosts if h.strip()]
    if given:
        return given
    return [*limits.LOCAL_HOSTS, *([fv.host] if fv.host not in ("0.0.0.0", "::", "") else [])]
