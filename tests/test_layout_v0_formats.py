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


def test_config_with_knobs_removed_in_issue_28_still_loads(caplog):
    """Issue 28 removed 16 research knobs from BGANConfig; the layout_v0 model's config.json
    still holds two of them (adv_to_encoder, noise_dim): it loads, and the debug log says
    what was skipped."""
    import logging

    from bgan_tf.config import REMOVED_FIELDS, BGANConfig

    stored = json.loads((DATA / "model" / "config.json").read_text())
    assert {"adv_to_encoder", "noise_dim"} <= stored.keys() <= {*REMOVED_FIELDS, *BGANConfig.__dataclass_fields__}
    # The "absl" logger's own level: after an in-process absl app.run (another test) it is INFO.
    with caplog.at_level(logging.DEBUG, logger="absl"):
        config = BGANConfig.from_dict(stored)
    assert config.num_bits == 16 and not hasattr(config, "noise_dim")
    assert "adv_to_encoder, noise_dim" in caplog.text


def test_run_folder_trained_with_a_removed_knob_is_refused_with_one_line(tmp_path):
    """Issue 28: a run folder written before the change resumes when its removed knobs sat at
    their old defaults (they changed nothing), and is refused with one line when one was set
    (resuming without it would silently continue into another model)."""
    import dataclasses

    import pytest

    from bgan_tf.config import BGANConfig
    from bgan_tf.errors import UserError
    from bgan_tf.training.run_folder import check_run_dir

    config = BGANConfig(output_dir=str(tmp_path / "run"))
    os.makedirs(config.output_dir)
    old = {**dataclasses.asdict(config), "noise_dim": 0, "lr_backbone": 0.0, "early_stopping_holdout": 0.05}
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    check_run_dir(config)  # the old defaults: resumes
    (tmp_path / "run" / "config.json").write_text(json.dumps({**old, "lr_backbone": 1e-4, "g_steps": 2}))
    with pytest.raises(UserError, match=r"holds a run trained with --g_steps 2, --lr_backbone 0.0001, which this "
                                        r"version no longer has \(issue 28\)"):
        check_run_dir(config)
