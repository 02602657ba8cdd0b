"""What a trained model folder is: its files, its marker, its one writer and its one reader.

Training writes the folder (``RUN/model``) whole with `write_model_folder`, through
`atomic.staged_dir`: ``encoder.weights.h5`` (plus ``generator.weights.h5`` and
``discriminator.weights.h5`` when the run had a GAN), ``config.json`` (the BGANConfig it
was trained with) and ``metadata.json``, whose format ``bgan_tf.model/1`` marks the folder
as ours (`is_model_dir`). `read_model_files` reads config.json and metadata.json back and
validates them, raising a UserError that names the folder and the unusable file (the
weights are loaded by `bgan_tf.inference.keras_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bgan_tf import atomic
from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError

if TYPE_CHECKING:
    from bgan_tf.data.sources import ImageData

MODEL_FORMAT = "bgan_tf.model/1"
MODEL_WHAT = "trained model folder"
MODEL_FILES = ("config.json", "metadata.json", "encoder.weights.h5")
WHAT_TO_DO = "retrain the model (python -m bgan_tf.train) or pass another model folder"


def read_json_or_none(path: Path) -> Any:
    """The JSON value in ``path``, or None if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """A model folder training wrote: metadata.json of format bgan_tf.model/1."""
    meta = read_json_or_none(Path(path) / "metadata.json")
    return isinstance(meta, dict) and meta.get("format") == MODEL_FORMAT


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_model_folder(final_dir: str, config: BGANConfig, encoder, data: "ImageData", generator=None,
                       discriminator=None, commit: str | None = None) -> None:
    """Write encoder/generator/discriminator weights + config + metadata as one folder.

    Through atomic.staged_dir: filled beside the target, swapped in whole (a crash leaves
    the previous model), umask modes, temps of killed runs removed, and never over a
    folder that is not a model folder of ours."""
    with atomic.staged_dir(final_dir, what=MODEL_WHAT, is_ours=is_model_dir) as tmp:
        encoder.save_weights(str(tmp / "encoder.weights.h5"))
        if generator is not None:
            generator.save_weights(str(tmp / "generator.weights.h5"))
            discriminator.save_weights(str(tmp / "discriminator.weights.h5"))
        (tmp / "config.json").write_text(config.to_json(), encoding="utf-8")
        meta = {
            "format": MODEL_FORMAT,
            "model_id": weights_id(encoder.weights),
            "num_bits": config.num_bits,
            "backbone": {"name": config.backbone, "weights": config.backbone_weights,
                         "input_size": config.backbone_input_size, "frozen": config.freeze_backbone,
                         "trainable_from": config.trainable_from or None},
            "preprocessing": {"input": "uint8 RGB [N,H,W,3], any H x W",
                              "resize": f"bilinear to {config.backbone_input_size}x{config.backbone_input_size}",
                              "normalisation": encoder.spec.normalisation},
            "image_size": config.image_size,
            "training_data": {"dataset": config.dataset, "count": len(data), "fingerprint": data.fingerprint()},
            # The trainer passes the commit it started from: HEAD may have moved since.
            "git_commit": commit or git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def weights_id(weights: Any) -> str:
    """A model's id: the first 16 hex digits of the sha256 of its encoder's weight values.

    An index records the id of the model that built it and refuses queries from another.
    """
    h = hashlib.sha256()
    for v in weights:
        h.update(np.ascontiguousarray(np.asarray(v)).tobytes())
    return h.hexdigest()[:16]


def check_weights_id(model_dir: str, metadata: dict, weights: Any) -> None:
    """UserError when the loaded weights are not the ones metadata.json's model_id was made of.

    Why: the id was read from metadata.json alone, so another model's weights copied into
    the folder kept its id and an index took their codes as its own (issue 27 case 17).
    A folder whose metadata has no model_id (none written so far) is accepted.
    """
    recorded = metadata.get("model_id")
    if not isinstance(recorded, str) or not recorded:
        return
    actual = weights_id(weights)
    if actual != recorded:
        raise UserError(f"the weights in {os.path.join(model_dir, 'encoder.weights.h5')} are not the ones "
                        f"this model folder was written with (metadata.json says model {recorded}, the "
                        f"weights are {actual}); re-train or re-export the model")


def unusable_model(model_dir: str, name: str, problem: str) -> UserError:
    """The one message for a model folder whose file ``name`` cannot be used."""
    return UserError(f"cannot load the model in {model_dir}: {name} {problem}; {WHAT_TO_DO}")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its class name if it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


def _read_json_object(model_dir: str, name: str) -> dict:
    path = os.path.join(model_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise unusable_model(model_dir, name, f"is not valid JSON ({first_line(e)})") from None
    except OSError as e:
        raise unusable_model(model_dir, name, f"cannot be read ({e.strerror or e})") from None
    if not isinstance(obj, dict):
        raise unusable_model(model_dir, name, f"holds a JSON {type(obj).__name__}, not an object")
    return obj


def _is_int(v: object, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_config(model_dir: str, config: BGANConfig, metadata: dict) -> None:
    """The fields the encoder's architecture is built from, checked before building it
    (a bad value would otherwise surface as a Keras traceback)."""
    bad = []
    if not _is_int(config.num_bits, 1):
        bad.append(f"num_bits {config.num_bits!r} (need an integer >= 1)")
    if not _is_int(config.backbone_input_size, 1):
        bad.append(f"backbone_input_size {config.backbone_input_size!r} (need an integer >= 1)")
    if not isinstance(config.backbone, str) or not config.backbone:
        bad.append(f"backbone {config.backbone!r} (need a backbone name)")
    hidden = config.hash_hidden if isinstance(config.hash_hidden, (tuple, list)) else None
    if hidden is None or not all(_is_int(h, 1) for h in hidden):
        bad.append(f"hash_hidden {config.hash_hidden!r} (need a list of integers >= 1)")
    if config.sign_mode not in ("tanh", "app", "ste"):
        bad.append(f"sign_mode {config.sign_mode!r} (need tanh, app or ste)")
    if bad:
        raise unusable_model(model_dir, "config.json", "has invalid values: " + "; ".join(bad))
    meta_bits = metadata.get("num_bits")
    if meta_bits is not None and meta_bits != config.num_bits:
        raise unusable_model(model_dir, "config.json", f"says num_bits {config.num_bits} but metadata.json "
                             f"says {meta_bits}: the files come from different models")


def read_model_files(model_dir: str) -> tuple[BGANConfig, dict]:
    """config.json and metadata.json of a model folder; UserError naming the file if unusable."""
    if not os.path.isdir(model_dir):
        if os.path.exists(model_dir):
            raise UserError(f"{model_dir} is a file, not a model folder; pass the 'model' folder "
                            "that training wrote (e.g. runs/digits/model)")
        raise UserError(f"model folder not found: {model_dir}")
    missing = [n for n in MODEL_FILES if not os.path.isfile(os.path.join(model_dir, n))]
    if len(missing) == len(MODEL_FILES):
        raise UserError(f"{model_dir} is not a trained bgan_tf model (no {', '.join(MODEL_FILES)}); "
                        "pass the 'model' folder that training wrote (e.g. runs/digits/model)")
    if missing:
        raise UserError(f"{model_dir} is not a trained bgan_tf model (missing {', '.join(missing)}); "
                        f"{WHAT_TO_DO}")
    raw = _read_json_object(model_dir, "config.json")
    try:
        config = BGANConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        raise unusable_model(model_dir, "config.json", f"is not a bgan_tf config ({first_line(e)})") from None
    metadata = _read_json_object(model_dir, "metadata.json")
    _check_config(model_dir, config, metadata)
    return config, metadata
