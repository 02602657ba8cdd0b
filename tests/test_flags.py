"""flags/: shared flags have one meaning in any order, binaries define their flags at run time.

Every ``define_*_flags()`` is run into a fresh ``absl.flags.FlagValues`` in several
orders (one process may hold several binaries, as the tests do): no DuplicateFlagError,
and every flag, shared or not, has the same default, help and bounds in every order.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags

from flags import common
from flags.eval_flags import define_eval_flags
from flags.export_flags import define_export_flags
from flags.search_flags import define_index_flags, define_service_flags
from flags.train_flags import define_train_flags

ROOT = Path(__file__).resolve().parent.parent
DEFINES = {
    "train": define_train_flags,
    "eval": define_eval_flags,
    "index": define_index_flags,
    "service": define_service_flags,
    "export": define_export_flags,
}
ORDERS = [
    ("train", "eval", "index", "service", "export"),
    ("eval", "train", "export", "service", "index"),
    ("service", "index", "export", "eval", "train"),
    ("index", "train", "service", "eval", "export"),
    ("export", "service", "eval", "index", "train"),
]


def _defined(order) -> flags.FlagValues:
    fv = flags.FlagValues()
    for name in order:
        DEFINES[name](flag_values=fv)
    return fv


def _describe(fv: flags.FlagValues) -> dict[str, tuple]:
    out = {}
    for name, flag in fv._flags().items():
        parser = flag.parser
        out[name] = (flag.default, flag.help, getattr(parser, "lower_bound", None),
                     getattr(parser, "upper_bound", None), fv.find_module_defining_flag(name))
    return out


def test_every_order_gives_every_flag_one_meaning():
    first = _describe(_defined(ORDERS[0]))
    for order in ORDERS[1:]:
        assert _describe(_defined(order)) == first, order
    # The shared ones are defined by flags.common, never by a binary's module.
    for name in common.SHARED:
        assert first[name][4] == "flags.common", name


@pytest.mark.parametrize("order", list(itertools.permutations(("train", "eval"))))
def test_seed_defaults_to_none_with_one_help_in_either_order(order):
    fv = _defined(order)
    assert fv["seed"].default is None
    assert "train: the --config's seed; evaluate: the model's own" in fv["seed"].help
    fv(["prog"])
    assert fv.seed is None and fv.holdout_per_class == 20 and fv.dataset is None


def test_defining_twice_is_a_no_op_and_shared_flags_parse_in_one_process():
    fv = _defined(ORDERS[0])
    before = _describe(fv)
    for define in DEFINES.values():
        define(flag_values=fv)
    assert _describe(fv) == before
    fv(["prog", "--seed=3", "--batch_size=32", "--max_pixels=100", "--model=m"])
    assert (fv.seed, fv.batch_size, fv.max_pixels, fv.model) == (3, 32, 100, "m")


def test_a_shared_name_defined_elsewhere_is_refused():
    fv = flags.FlagValues()
    flags.DEFINE_integer("seed", 0, "another meaning", flag_values=fv)
    with pytest.raises(flags.DuplicateFlagError):
        define_train_flags(flag_values=fv)


def test_importing_every_binary_in_one_process_defines_no_flag():
    # In this process too (other tests may have defined flags already): no DuplicateFlagError.
    import bgan_tf.evaluate  # noqa: F401
    import bgan_tf.index  # noqa: F401
    import bgan_tf.serve  # noqa: F401
    import bgan_tf.train  # noqa: F401
    import export.all  # noqa: F401
    import export.saved_model  # noqa: F401
    import export.tflite  # noqa: F401

    code = ("import bgan_tf.index, bgan_tf.train, bgan_tf.evaluate, bgan_tf.serve, export.all, "
            "export.saved_model, export.tflite, sys\n"
            "from absl import flags\n"
            "print(sorted(set(flags.FLAGS) & {'seed', 'model', 'index', 'num_bits', 'export_base', 'host'}), "
            "'tensorflow' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "False"]


def test_defining_flags_does_not_import_tensorflow():
    code = ("import sys\n"
            "from flags import eval_flags, export_flags, search_flags, train_flags\n"
            "train_flags.define_train_flags(); eval_flags.define_eval_flags(); search_flags.define_index_flags()\n"
            "search_flags.define_service_flags(); export_flags.define_export_flags()\n"
            "print('tensorflow' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_allowed_values_come_from_their_owners():
    from bgan_tf.evaluation.inputs import BASELINE_CHOICES, PROTOCOL_NAMES
    from bgan_tf.serving.tflite import TFLITE_VARIANTS

    fv = _defined(ORDERS[0])
    assert fv["baselines"].default == list(BASELINE_CHOICES)
    assert all(p in fv["protocol"].help for p in PROTOCOL_NAMES)
    assert fv["variants"].default == list(TFLITE_VARIANTS)


def test_named_configs_and_their_variants():
    from bgan_tf.configs import get_config
    from bgan_tf.errors import UserError

    frozen, tuned = get_config("cifar10"), get_config("cifar10:finetune")
    assert frozen.trainable_from == "" and frozen.graph_construction == "k1k2"
    assert (tuned.trainable_from, tuned.lr_e, tuned.graph_construction, tuned.disc_spectral_norm, tuned.lr_d,
            tuned.w_consistency) == ("block_10_expand", 1e-4, "diffusion", True, 3e-4, 1.0)
    assert tuned.replace(trainable_from="", lr_e=frozen.lr_e, graph_construction="k1k2", disc_spectral_norm=False,
                         lr_d=frozen.lr_d, w_consistency=0.0,
                         output_dir=frozen.output_dir) == frozen  # the variant changes only those
    tuned.validate()
    assert get_config("digits") == get_config("digits:")
    with pytest.raises(UserError, match="the variants of digits are: none"):
        get_config("digits:finetune")


def test_knobs_removed_in_issue_28_are_no_train_flags():
    """Issue 28 item 3: the research knobs that measured no gain are out of train's flags."""
    from absl import flags

    from bgan_tf.config import REMOVED_FIELDS
    from flags.train_flags import define_train_flags

    fv = flags.FlagValues()
    define_train_flags(fv)
    assert not set(REMOVED_FIELDS) & set(fv), sorted(set(REMOVED_FIELDS) & set(fv))


@pytest.mark.parametrize("module,flag", [("bgan_tf.train", "--output_dir"), ("bgan_tf.serve", "--index")])
def test_helpshort_exits_0_and_an_unknown_flag_exits_2(module, flag):
    """Issue 28 item 2: --helpshort exited 1 (absl's code), so scripts read help as a failure."""
    from testlib import run_binary

    shown = run_binary(module, "--helpshort")
    assert shown.returncode == 0, shown.stderr
    assert flag in shown.stdout
    bad = run_binary(module, "--no_such_flag")
    assert bad.returncode == 2 and bad.stderr.startswith("error: Unknown command line flag")
