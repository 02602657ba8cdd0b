"""Files written before the wing layout (commit fefd53c) still load and mean the same.

tests/fixtures/layout_v0 holds what that code wrote: a tiny trained model folder (small_cnn,
16 bits, digits), six images, and the index it built of them. The layout moved every
module; none of the on-disk formats may change with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "fixtures" / "layout_v0"


def test_model_folder_from_the_flat_layout_loads_and_encodes_as_before():
    from bgan_tf.codes import pack
    from bgan_tf.data.images import load_image_file
    from bgan_tf.inference.keras_model import load_encoder
    from bgan_tf.search.store import CodeStore

    encoder = load_encoder(str(DATA / "model"))
    meta = json.loads((DATA / "model" / "metadata.json").read_text())
    assert encoder.num_bits == 16
    assert encoder.model_id == meta["model_id"]
    store = CodeStore.load(DATA / "index", expect_num_bits=16, expect_model_id=encoder.model_id)
    names = [os.path.relpath(m["path"], store.manifest()["extra"]["image_root"]) for m in store.metadata_rows()]
    images = np.stack([load_image_file(str(DATA / "images" / n)) for n in names])
    codes = pack(encoder.encode(images))
    # The codes the old code indexed for these images: the same model gives the same
    # bits (float rounding may differ by the odd bit near zero across CPU kernels).
    agreement = 1.0 - np.unpackbits(codes ^ store.packed, axis=1).mean()
    assert agreement >= 0.97, agreement


def test_index_from_the_flat_layout_loads_and_answers():
    from bgan_tf.codes import unpack
    from bgan_tf.search.binary_index import BinaryIndex

    index = BinaryIndex.load(DATA / "index")
    assert len(index) == 6
    assert index.store.manifest()["format_version"] == 1
    first = index.store.packed[0]
    signs = unpack(first[None], 16)[0]  # +-1 signs of the stored code
    hits = index.search_one(signs, 3)
    assert len(hits) == 3 and hits[0].distance == 0
    assert index.store.code(hits[0].id).tolist() == first.tolist()
    assert {m["label"] for m in index.store.metadata_rows()} == {"a", "b"}
