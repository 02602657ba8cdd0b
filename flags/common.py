"""The flags several bgan_tf binaries share, each defined here once with one meaning.

Model Garden's ``official/common/flags.py`` is the pattern: a binary's ``define_*_flags()``
asks for the shared flags it takes with ``define_shared("seed", ...)``, and a second
request for a flag already defined here (another binary's ``define_*`` in the same
process) is a no-op, so in any order every shared flag has the same default, bounds and
help. Where binaries take a different value when the flag is not given (``--seed``:
train's config seed, evaluate's model seed), the default is None and each binary
resolves it; the bounds are the widest any binary takes, and a binary that takes
less checks its own range (train against BGANConfig's limits at parse time).
"""

from __future__ import annotations

from typing import Callable

from absl import flags

from bgan_tf.config import INT_LIMITS

FLAGS = flags.FLAGS

# --batch_size of index build: its default, and the most images it decodes at once.
INDEX_BATCH_SIZE = 64
MAX_INDEX_BATCH_SIZE = 1024


def _define_batch_size(fv: flags.FlagValues) -> None:
    lo, hi = INT_LIMITS["batch_size"]
    flags.DEFINE_integer(
        "batch_size", None,
        f"Images per step: train: the global batch, split across replicas ({lo} to {hi}; default: the "
        f"--config's); index build: images encoded per model call, each held decoded meanwhile (at most "
        f"{MAX_INDEX_BATCH_SIZE}; default {INDEX_BATCH_SIZE}).", lower_bound=1,
        upper_bound=max(hi, MAX_INDEX_BATCH_SIZE), flag_values=fv)


def _define_max_pixels(fv: flags.FlagValues) -> None:
    # Lazily: only index, serve and the export binaries take it, and search_flags imports this module.
    from bgan_tf.data.images import DEFAULT_MAX_PIXELS
    from bgan_tf.search.limits import DEFAULT_MAX_PIXELS as SERVICE_MAX_PIXELS

    flags.DEFINE_integer(
        "max_pixels", None,
        "Largest image (width x height) decoded, read from its header first: index build skips (and counts) "
        f"larger files and query refuses a larger image (default {DEFAULT_MAX_PIXELS:,}); serve answers a "
        f"larger upload with HTTP 413 (default {SERVICE_MAX_PIXELS:,}: many clients share the server); the "
        f"export binaries make the SavedModel's encode_bytes refuse a larger image (default {SERVICE_MAX_PIXELS:,}).",
        lower_bound=1, flag_values=fv)


_DEFINERS: dict[str, Callable[[flags.FlagValues], object]] = {
    "model": lambda fv: flags.DEFINE_string(
        "model", None,
        "What encodes images: a trained model folder (the 'model' folder training wrote); index and serve also "
        "take an exported .tflite encoder (python -m export.tflite) or the pixel-lsh:BITS[:SEED] baseline, and "
        "default to the model recorded in the index.", flag_values=fv),
    "dataset": lambda fv: flags.DEFINE_string(
        "dataset", None,
        "Images: digits (offline), tfds:NAME, folder:PATH or npz:PATH; evaluate also pools a comma-separated "
        "list in order (e.g. folder:cifar10/train,folder:cifar10/test). Default: train: the --config's "
        "(digits); evaluate: the model's training dataset (with its --max_images).", flag_values=fv),
    "tfds_split": lambda fv: flags.DEFINE_string(
        "tfds_split", None,
        "TFDS split to read for tfds: datasets, e.g. train or train[:10%] (default: train: the --config's; "
        "evaluate: the model's).", flag_values=fv),
    "data_dir": lambda fv: flags.DEFINE_string(
        "data_dir", None,
        "TFDS data_dir holding prepared datasets (default: train: the --config's; evaluate: the model's).",
        flag_values=fv),
    "max_images": lambda fv: flags.DEFINE_integer(
        "max_images", None,
        "Use at most N images (a seeded sample of a folder's files, else the first N; train holds its queries "
        "out of these). Default: train: all; evaluate: the model's value when --dataset is its training "
        "dataset, else all. Must match training to reproduce a holdout split.",
        lower_bound=INT_LIMITS["max_images"][0], upper_bound=INT_LIMITS["max_images"][1], flag_values=fv),
    "seed": lambda fv: flags.DEFINE_integer(
        "seed", None,
        "Random seed of data order, initialisation, noise and the holdout split; evaluate must use the "
        "training seed to reproduce the training split. Default: train: the --config's seed; evaluate: the "
        "model's own.", lower_bound=INT_LIMITS["seed"][0], upper_bound=INT_LIMITS["seed"][1], flag_values=fv),
    "holdout_per_class": lambda fv: flags.DEFINE_integer(
        "holdout_per_class", 20,
        "Queries per class held out: train keeps them out of training for the closing mAP check (0: none); "
        "evaluate's holdout protocol scores them (at least 1; train's value and --seed give its split).",
        lower_bound=0, upper_bound=1_000_000, flag_values=fv),
    "batch_size": _define_batch_size,
    "max_pixels": _define_max_pixels,
}
SHARED = tuple(_DEFINERS)


def define_shared(*names: str, flag_values: flags.FlagValues = FLAGS) -> None:
    """Define the named shared flags in ``flag_values``; a name already defined here is skipped.

    A flag of that name defined anywhere else is a DuplicateFlagError: it would have
    another meaning.
    """
    for name in names:
        definer = _DEFINERS[name]  # KeyError: not a shared flag
        if name in flag_values:
            if flag_values.find_module_defining_flag(name) != __name__:
                raise flags.DuplicateFlagError.from_flag(name, flag_values)
            continue
        definer(flag_values)
