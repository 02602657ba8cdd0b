"""`write_query_encoder`: the float TFLite copy of a Keras encoder that `index build` keeps
in an index, checked bit for bit first, so queries need no TensorFlow (issue 29 item 4).
Lives here, not in search, because the conversion is serving's (`serving.tflite`) and
search may not import a wing beside it; `search.query_encoder` reads what this writes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np
from absl import logging as absl_logging

from bgan_tf import atomic
from bgan_tf.errors import UserError
from bgan_tf.inference.encoders import Encoder
from bgan_tf.inference.tflite import TFLiteEncoder, quiet_tflite_notices
from bgan_tf.search import indexer
from bgan_tf.search.query_encoder import QUERY_ENCODER_FILE, VerifiedTFLiteEncoder

# Indexed images the float TFLite conversion is checked on before an index trusts it, at
# their own size (the resize path, for photos) and, for those already at the model's input
# size, also at twice it; at most CHECK_PIXELS decoded pixels in all (phone photos are
# 12 megapixels: 32 of them would be gigabytes).
QUERY_ENCODER_CHECK_IMAGES = 32
CHECK_PIXELS = indexer.ENCODE_PIXEL_BUDGET // 2


def _check_images(index, input_size: int) -> list[np.ndarray]:
    out, held = [], 0
    for meta in index.store.metadata_rows()[:QUERY_ENCODER_CHECK_IMAGES]:
        try:
            im = indexer.read_image(str(meta.get("path", "")))
        except UserError:  # gone or changed since it was indexed: check on the others
            continue
        variants = [im] + ([np.repeat(np.repeat(im, 2, axis=0), 2, axis=1)]
                           if im.shape[:2] == (input_size, input_size) else [])
        size = sum(v.shape[0] * v.shape[1] for v in variants)
        if out and held + size > CHECK_PIXELS:
            break
        out, held = out + variants, held + size
    return out


def write_query_encoder(index_path: str | os.PathLike[str], encoder: Encoder) -> str:
    """Keep a float TFLite conversion of a Keras ``encoder`` in the index for fast queries.

    Written only when its codes equal the Keras model's on a check set of the indexed
    images (`_check_images`); returns one line saying what was done. The
    caller holds the index's writer lock. Encoders that are not Keras models (a .tflite
    file, pixel-lsh) already run without TensorFlow: nothing is written.
    """
    if not hasattr(encoder, "config") or not hasattr(encoder, "model"):
        return "queries run this model as it is (no conversion needed)"
    # serving.tflite brings TensorFlow's converter: imported only when there is a Keras model.
    from bgan_tf.serving.tflite import tflite_converter, tflite_saved_model

    index = indexer.open_index(index_path, encoder)
    checks = _check_images(index, int(encoder.input_size))
    if not checks:
        return "queries load the Keras model (no readable indexed image to check a faster copy on)"
    verbosity = absl_logging.get_verbosity()
    with tempfile.TemporaryDirectory(prefix="bgan_query_encoder_") as work:
        # The SavedModel writer logs its temp paths at INFO: not the user's business.
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            with quiet_tflite_notices():
                data = tflite_converter(tflite_saved_model(encoder, os.path.join(work, "sm")), "float").convert()
            tmp_file = os.path.join(work, QUERY_ENCODER_FILE)
            with open(tmp_file, "wb") as f:
                f.write(data)
            fast = VerifiedTFLiteEncoder(TFLiteEncoder(tmp_file), encoder.model_id, {})
            same = np.array_equal(indexer.encode_images(fast, checks), indexer.encode_images(encoder, checks))
        except Exception as e:  # noqa: BLE001 - the index is saved and fine: only the speed-up is lost
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"queries load the Keras model (its TFLite conversion failed: {first})"
        finally:
            absl_logging.set_verbosity(verbosity)
    if not same:
        return ("queries load the Keras model: its float TFLite conversion did not give the same codes "
                f"on {len(checks)} check images")
    index.store.extra["query_encoder"] = {"file": QUERY_ENCODER_FILE, "sha256": hashlib.sha256(data).hexdigest(),
                                          "model_id": encoder.model_id, "checked_images": len(checks)}
    index.save(index_path)
    # After the save: a save swaps in a new folder, which holds only the index's own files.
    atomic.write_bytes(os.path.join(os.fspath(index_path), QUERY_ENCODER_FILE), data)
    return (f"queries run a float TFLite copy of the model kept in the index (same codes on "
            f"{len(checks)} check images), without TensorFlow")
