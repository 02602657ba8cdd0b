"""Build or query a binary image index.

    python -m bgan_tf.index build --model MODEL_DIR --images DIR --index OUT
    python -m bgan_tf.index query --index OUT --image FILE --k 10 [--json] [--model MODEL_DIR]

`build` is resumable: images already indexed (by path) are skipped and the index
is saved atomically every --save_every images. It writes only to a new or empty
folder or an existing index outside --images (checked before the model loads), and
one build at a time per index. `query` encodes with --model (or the model recorded
at build time by absolute path, so it works from any folder; by default through the
float TFLite copy `build` keeps in the index after checking its codes, which needs no
TensorFlow), refuses an index built by another model and returns at most the
index size. Images over --max_pixels, or files over 8 bytes per pixel of it, are
skipped (build) or refused (query); docs/search.md says what a build may read.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from absl import flags

from bgan_tf import atomic
from bgan_tf.inference.encoders import load_model
from bgan_tf.search import indexer as indexing
from bgan_tf.search import backend_base
from bgan_tf.search import store
from bgan_tf.search.query_encoder import query_encoder
from bgan_tf.errors import UserError, cli_run
from flags import common, search_flags
from flags.search_flags import define_index_flags

FLAGS = flags.FLAGS


def _require(**values: Any) -> None:
    missing = [f"--{k}" for k, v in values.items() if v in (None, "")]
    if missing:
        raise UserError(f"missing {', '.join(missing)}")


def main(argv: list[str]) -> None:
    # absl routes Python logging at INFO; FAISS's loader would print ten lines per run.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if len(argv) != 2 or argv[1] not in ("build", "query"):
        raise UserError("usage: python -m bgan_tf.index build|query --index DIR ...")
    batch_size, max_pixels = search_flags.index_batch_size(), search_flags.index_max_pixels()
    backend_base.set_num_threads(FLAGS.threads)
    if argv[1] == "build":
        _require(model=FLAGS.model, images=FLAGS.images, index=FLAGS.index)
        # Paths and the folder are checked before the model is loaded or anything is
        # encoded, and the writer lock is taken first, so a concurrent build fails fast.
        listing = indexing.prepare_build(FLAGS.images, FLAGS.index)
        with atomic.output_lock(FLAGS.index, store.INDEX_WHAT):
            encoder = load_model(FLAGS.model)
            report = indexing.build_index(
                encoder, FLAGS.images, FLAGS.index, backend=FLAGS.backend,
                backend_knobs=search_flags.backend_knobs(), batch_size=batch_size,
                save_every=FLAGS.save_every, progress=FLAGS.progress, model_ref=FLAGS.model,
                max_pixels=max_pixels, listing=listing)
            # Converted once here so that every later query can skip TensorFlow.
            from bgan_tf.api.query_encoder_build import write_query_encoder

            fast = write_query_encoder(FLAGS.index, encoder)
        print(report.summary(FLAGS.index))
        print(fast)
        for line in (report.failed + report.too_large)[:10]:
            print(f"skipped {indexing.printable(line)}")
        return
    _require(index=FLAGS.index, image=FLAGS.image)
    encoder = query_encoder(FLAGS.index, FLAGS.model)
    index = indexing.open_index(FLAGS.index, encoder, **search_flags.open_options())
    results = indexing.query_index(index, encoder, FLAGS.image, FLAGS.k, max_pixels=max_pixels)
    if FLAGS.json:
        # ensure_ascii (json's default): names that are not UTF-8 print as \udcXX escapes,
        # which json.loads + os.fsencode turn back into the original bytes.
        print(json.dumps({"query": FLAGS.image, "k": FLAGS.k, "results": [r.to_dict() for r in results]},
                         ensure_ascii=True))
    else:
        print(indexing.format_results(results))


def run() -> None:
    define_index_flags()
    cli_run(main, search_flags, common)


if __name__ == "__main__":
    run()
