"""Issue 11, train and evaluate: bad input is one error line (exit 2) and user data survives.

- item 2: --report_dir naming a folder that is not a report is refused untouched, before
  the evaluation runs; a report never lands in the model or dataset folder;
- item 10: every numeric train/eval flag is bounded at parse time, and BGANConfig.validate
  refuses the same values for library calls;
- item 13: an --output_dir that is a file, unwritable, someone else's folder, or a run with
  other network shapes is refused untouched; a batch larger than the data is one line;
- item 15: the model folder, eval.json and the report follow the umask, and temp folders
  of killed writers are removed by the next write.

Issue 27 (the second hostile probe), at the end: case 8, a model config.json with huge sizes
is refused on load; case 14, resuming on other data is refused; case 16, --num_bits 1 is
refused before anything is written. Cases 6, 10 and 11 are in test_bad_input_checkpoints.py.

Most checks are in-process on the session's tiny model (tiny_model_dir, tests/conftest.py); three
subprocess runs pin the command-line form (one error line, exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from testlib import TINY_TRAIN, run_binary

from bgan_tf import atomic
from bgan_tf.config import BGANConfig
from bgan_tf.errors import UserError
from flags.eval_flags import define_eval_flags
from flags.train_flags import define_train_flags

# The flags of both binaries, as their run() defines them (in any order: shared flags have one meaning).
define_train_flags()
define_eval_flags()

def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    return lines[0]


def photos(folder: Path) -> dict[str, bytes]:
    """A folder of someone's files; returns its contents to compare with later."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 precious")
    (folder / "notes.txt").write_text("mine")
    return contents(folder)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def tiny_config(output_dir: Path, **overrides) -> BGANConfig:
    return BGANConfig(**{**TINY_TRAIN, **overrides, "output_dir": str(output_dir)})


def copy_run(model_dir: str, dest: Path) -> Path:
    """A private copy of the tiny model's run folder (the session fixture stays untouched)."""
    shutil.copytree(os.path.dirname(model_dir), dest)
    return dest


@pytest.fixture
def eval_results():
    from bgan_tf.evaluation.retrieval_metrics import evaluate_codes

    rng = np.random.default_rng(0)
    codes = np.where(rng.normal(size=(60, 8)) >= 0, 1.0, -1.0)
    labels = rng.integers(0, 3, size=60)
    return {"LSH": evaluate_codes(codes[:10], codes[10:], labels[:10], labels[10:], topk=(10,))}


# ------------------------------------------------------------------ item 2: report folder
def test_report_refuses_a_foreign_folder_or_file_untouched(tmp_path, eval_results):
    from bgan_tf.evaluation.report import write_report

    before = photos(tmp_path / "photos")
    with pytest.raises(UserError, match="already holds files that are not a report folder"):
        write_report(tmp_path / "photos", eval_results)
    assert contents(tmp_path / "photos") == before
    (tmp_path / "a_file").write_text("keep")
    with pytest.raises(UserError, match="is a file"):
        write_report(tmp_path / "a_file", eval_results)
    assert (tmp_path / "a_file").read_text() == "keep"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_report_follows_umask_and_cleans_killed_writers_temps(tmp_path, eval_results):
    from bgan_tf.evaluation.report import write_report

    dead = tmp_path / ".rep.tmp-killed"  # what a writer killed mid-report leaves
    dead.mkdir()
    (dead / "metrics.json").write_text("{")
    out = write_report(tmp_path / "rep", eval_results)
    assert not dead.exists()
    assert stat.S_IMODE(out.stat().st_mode) == atomic.umask_mode(0o777)
    for name in ("metrics.json", "index.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == atomic.umask_mode(0o666), name
    write_report(out, eval_results, title="again")  # an earlier report is ours: replaced
    assert (out / "index.md").read_text().startswith("# again")


def test_report_never_inside_the_model_or_dataset(tiny_model_dir, tmp_path, eval_results):
    from bgan_tf.evaluation import evaluator as ev_lib
    from bgan_tf.evaluation.report import check_report_dir

    evaluation = {"results": eval_results, "example_grid": None, "reconstructions": None, "title": "t",
                  "notes": None, "info": {"model_dir": tiny_model_dir}}
    with pytest.raises(UserError, match="overlaps the input"):
        ev_lib.write_evaluation_report(os.path.join(tiny_model_dir, "report"), evaluation)
    assert not os.path.exists(os.path.join(tiny_model_dir, "report"))
    (tmp_path / "imgs").mkdir()
    with pytest.raises(UserError, match="overlaps the input"):
        check_report_dir(tmp_path / "imgs" / "report", tiny_model_dir, tmp_path / "imgs")


def test_evaluate_checks_the_report_folder_before_evaluating(tiny_model_dir, tmp_path, monkeypatch):
    """In-process main(): the refusal comes before the data is loaded or anything evaluated."""
    from absl import flags

    import bgan_tf.evaluate as evaluate_bin
    from bgan_tf.evaluation import evaluator as ev_lib
    from bgan_tf.evaluation import inputs as eval_inputs

    def slow_part(*args, **kwargs):
        raise AssertionError("the evaluation ran before the report folder was checked")

    monkeypatch.setattr(eval_inputs, "load_eval_data", slow_part)
    monkeypatch.setattr(ev_lib, "evaluate_model", slow_part)
    before = photos(tmp_path / "photos")
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["evaluate", "--model", tiny_model_dir, "--report_dir", str(tmp_path / "photos")])
        with pytest.raises(UserError, match="not a report folder"):
            evaluate_bin.main(["evaluate"])
    finally:
        flags.FLAGS.unparse_flags()
    assert contents(tmp_path / "photos") == before


def test_evaluate_finds_a_broken_weights_file_before_loading_data(tiny_model_dir, tmp_path, monkeypatch):
    """Item 11 for evaluate: a truncated encoder.weights.h5 fails before the data is read."""
    import shutil

    from absl import flags

    import bgan_tf.evaluate as evaluate_bin
    from bgan_tf.evaluation import inputs as eval_inputs

    def slow_part(*args, **kwargs):
        raise AssertionError("the data was loaded before the model was checked")

    monkeypatch.setattr(eval_inputs, "load_eval_data", slow_part)
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "encoder.weights.h5"
    weights.write_bytes(weights.read_bytes()[:200])
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["evaluate", "--model", str(broken), "--report_dir", str(tmp_path / "rep")])
        with pytest.raises(UserError, match="encoder.weights.h5"):
            evaluate_bin.main(["evaluate"])
    finally:
        flags.FLAGS.unparse_flags()
    assert not (tmp_path / "rep").exists()


def test_evaluate_binary_refuses_existing_folder_with_one_line(tiny_model_dir, tmp_path):
    before = photos(tmp_path / "photos")
    r = run_binary("bgan_tf.evaluate", "--model", tiny_model_dir, "--report_dir", str(tmp_path / "photos"),
                   timeout=120)
    line = one_error_line(r)
    assert "photos already holds files that are not a report folder" in line
    assert "nothing was changed" in line
    assert contents(tmp_path / "photos") == before


# ------------------------------------------------------------------ item 10: bounded flags
@pytest.mark.parametrize("args,message", [
    (["--num_bits", "100000"], "--num_bits=100000"),
    (["--num_bits", "1"], "--num_bits=1"),  # issue 27 case 16
    (["--steps_per_epoch", "-3"], "--steps_per_epoch=-3"),
    (["--batch_size", "1"], "--batch_size=1"),
    (["--batch_size", "100000"], "--batch_size=100000"),
    (["--epochs", "0"], "--epochs=0"),
    (["--image_size", "48"], "--image_size must be 32 or 64"),
    (["--backbone_input_size", "8"], "--backbone_input_size=8"),
    (["--k1", "0"], "--k1=0"),
    (["--k2", "100000"], "--k2=100000"),
    (["--seed", "-1"], "--seed=-1"),
    (["--holdout_per_class", "-2"], "--holdout_per_class=-2"),
    (["--disc_feature_dim", "1000000"], "--disc_feature_dim=1000000"),
    (["--lr_e", "0"], "--lr_e must be a number > 0.0"),
    (["--lr_d", "nan"], "--lr_d must be a number > 0.0"),
    (["--w_nbr", "-1"], "--w_nbr must be a number >= 0.0"),
    (["--adam_beta_1", "1"], "--adam_beta_1 must be a number"),
    (["--gen_channels", "16,100000,8"], "--gen_channels must be 2 to 7"),
    (["--hash_hidden", "0"], "--hash_hidden must be 0 to 8"),
    (["--beta_values", "1,-2"], "--beta_values must be 1 to 100"),
])
def test_train_flags_are_bounded_at_parse_time(args, message):
    from absl import flags

    flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError) as e:
            flags.FLAGS(["train", *args])
    finally:
        flags.FLAGS.unparse_flags()
    assert message in str(e.value)


@pytest.mark.parametrize("args,message", [
    (["--num_examples", "100000"], "--num_examples=100000"),
    (["--num_examples", "-1"], "--num_examples=-1"),
    (["--max_images", "0"], "--max_images=0"),
])
def test_eval_flags_are_bounded_at_parse_time(args, message):
    from absl import flags

    flags.FLAGS.unparse_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError) as e:
            flags.FLAGS(["evaluate", *args])
    finally:
        flags.FLAGS.unparse_flags()
    assert message in str(e.value)


@pytest.mark.parametrize("overrides,message", [
    (dict(steps_per_epoch=-3), "--steps_per_epoch must be an integer from 0"),
    (dict(num_bits=100000), "--num_bits must be an integer from 2 to 1024"),
    (dict(num_bits=16.5), "--num_bits must be an integer"),
    (dict(num_bits=1), "--num_bits must be an integer from 2"),  # issue 27 case 16
    (dict(batch_size=1), "--batch_size must be an integer from 2"),
    (dict(lr_g=float("inf")), "--lr_g must be a number"),
    (dict(gen_channels=(8,) * 7), "cannot make 32x32 images"),
    (dict(backbone_input_size=512, batch_size=4096), "pixels per step"),
])
def test_library_refuses_what_the_flags_refuse(tmp_path, overrides, message):
    from bgan_tf.training.trainer import train

    config = tiny_config(tmp_path / "run", **overrides)
    with pytest.raises(UserError, match=message):
        config.validate()
    with pytest.raises(UserError, match=message):
        train(config, verbose=0)
    assert not (tmp_path / "run").exists()


def test_neighbourhood_graph_size_is_bounded_by_the_data():
    """--k1/--k2 are bounded one by one; their product with the image count is bounded
    once the data is known (the pair list of N * K2 * (K1 + 1) candidates)."""
    from bgan_tf.training.trainer import check_data_fits

    check_data_fits(BGANConfig(k1=20, k2=30, batch_size=64), 60_000)  # CIFAR-10 sized: fine
    with pytest.raises(UserError, match="candidate pairs.*lower --k1/--k2 or --max_images"):
        check_data_fits(BGANConfig(k1=1000, k2=1000, batch_size=64), 60_000)


def test_train_binary_bad_number_is_one_line_and_writes_nothing(tmp_path):
    r = run_binary("bgan_tf.train", "--num_bits", "100000", "--output_dir", str(tmp_path / "run"), timeout=120)
    line = one_error_line(r)
    assert "--num_bits=100000" in line and "range [2, 1024]" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ item 13: output paths
def test_train_binary_output_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    r = run_binary("bgan_tf.train", "--output_dir", str(tmp_path / "run"), "--epochs", "1", timeout=120)
    line = one_error_line(r)
    assert "is a file, not a folder" in line and "training run folder" in line
    assert (tmp_path / "run").read_text() == "not a folder"


def test_train_refuses_a_folder_that_is_not_a_run_folder(tmp_path):
    from bgan_tf.training.trainer import train

    before = photos(tmp_path / "photos")
    with pytest.raises(UserError, match="not a training run folder"):
        train(tiny_config(tmp_path / "photos"), verbose=0)
    assert contents(tmp_path / "photos") == before
    assert not (tmp_path / ".photos.lock").exists()  # refused before the lock file is made


def test_train_refuses_an_output_inside_the_image_folder(tmp_path):
    from bgan_tf.training.trainer import check_run_dir

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    config = tiny_config(tmp_path / "imgs" / "run", dataset=f"folder:{tmp_path / 'imgs'}")
    with pytest.raises(UserError, match="overlaps the input"):
        check_run_dir(config)
    assert sorted(os.listdir(tmp_path / "imgs")) == ["a"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_train_and_report_refuse_a_read_only_folder(tmp_path, eval_results):
    from bgan_tf.evaluation.report import check_report_dir
    from bgan_tf.training.trainer import check_run_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UserError, match="permission denied"):
            check_run_dir(tiny_config(ro / "run"))
        with pytest.raises(UserError, match="permission denied"):
            check_report_dir(ro / "report")
    finally:
        ro.chmod(0o755)


def test_resume_with_other_num_bits_says_choose_a_new_output_dir(tiny_model_dir, tmp_path):
    from bgan_tf.training.trainer import train

    run = copy_run(tiny_model_dir, tmp_path / "run")
    def files() -> dict[Path, bytes]:  # lock files aside (atomic.output_lock keeps them)
        return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.name.endswith(".lock")}

    before = files()
    with pytest.raises(UserError, match=r"--num_bits 16 \(now 32\).*choose a new --output_dir"):
        train(tiny_config(run, num_bits=32), verbose=0)
    # A run of an older version has no config.json to compare: the checkpoint restore
    # itself fails, and that too is one line naming the fix, with nothing changed.
    (run / "config.json").unlink()
    del before[run / "config.json"]
    with pytest.raises(UserError, match="cannot resume.*choose a new --output_dir"):
        train(tiny_config(run, num_bits=32), verbose=0)
    assert files() == before


def test_batch_larger_than_the_data_is_one_line(tmp_path):
    from bgan_tf.data.sources import load_digits
    from bgan_tf.training.trainer import train

    data = load_digits().subset(np.arange(20))
    with pytest.raises(UserError, match="20 training images is fewer than --batch_size 32"):
        train(tiny_config(tmp_path / "run", batch_size=32), data, verbose=0)
    assert not (tmp_path / "run" / "config.json").exists()


# ------------------------------------------------------------------ item 15: modes, temps
def test_model_folder_follows_the_umask(tiny_model_dir):
    model = Path(tiny_model_dir)
    assert stat.S_IMODE(model.stat().st_mode) == atomic.umask_mode(0o777)
    for p in model.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == atomic.umask_mode(0o666), p.name
    assert json.loads((model / "metadata.json").read_text())["format"] == "bgan_tf.model/1"
    assert json.loads((model.parent / "config.json").read_text())["num_bits"] == TINY_TRAIN["num_bits"]


def test_rerun_cleans_temps_of_killed_runs_and_keeps_the_model(tiny_model_dir, tmp_path):
    from bgan_tf.training.trainer import train

    run = copy_run(tiny_model_dir, tmp_path / "run")
    for dead in (".model.tmp-killed", ".model_tmp_older_version"):  # staged_dir's, the old writer's
        (run / dead).mkdir()
        (run / dead / "encoder.weights.h5").write_bytes(b"half")
    encoder = (run / "model" / "encoder.weights.h5").read_bytes()
    result = train(tiny_config(run), verbose=0)
    assert result.epochs_run == 0  # finished: not retrained
    assert not (run / ".model.tmp-killed").exists() and not (run / ".model_tmp_older_version").exists()
    assert (run / "model" / "encoder.weights.h5").read_bytes() == encoder


def test_eval_json_follows_the_umask(tiny_model_dir, tmp_path, monkeypatch):
    """train's main() writes eval.json through atomic (0644 under umask 022, was 0600).
    Training and the closing evaluation are stubbed: this pins the writing."""
    from absl import flags

    import bgan_tf.train as train_bin
    from bgan_tf.evaluation import quick as experiment
    from bgan_tf.training import trainer as training

    run = tmp_path / "run"

    def fake_train(config, data, verbose=1):
        run.mkdir()
        return training.TrainResult(tiny_model_dir, {}, 1, {"total": 1.0})

    monkeypatch.setattr(training, "train", fake_train)
    monkeypatch.setattr(experiment, "quick_evaluate", lambda *a, **k: experiment.QuickEval(
        {"BGAN": {"map_all": 0.5, "map_at_100": 0.5}}, 10, 90, 100))
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", "--output_dir", str(run), "--max_images", "200", "--holdout_per_class", "2"])
        train_bin.main(["train"])
    finally:
        flags.FLAGS.unparse_flags()
    path = run / "eval.json"
    assert json.loads(path.read_text())["num_queries"] == 10
    assert stat.S_IMODE(path.stat().st_mode) == atomic.umask_mode(0o666)
    assert [p for p in os.listdir(run) if ".tmp" in p] == []


# ------------------------------------------------------------------ issue 27
def test_num_bits_1_is_one_line_before_anything_is_written(tmp_path):
    """Issue 27 case 16: --num_bits 1 trained and wrote the model, then the closing
    evaluation failed (radius must be in 0..1, got 2); now refused at parse time."""
    r = run_binary("bgan_tf.train", "--num_bits", "1", "--output_dir", str(tmp_path / "run"), timeout=120)
    assert "--num_bits=1" in one_error_line(r)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field,value", [("backbone_input_size", 20000), ("num_bits", 10**9),
                                         ("hash_hidden", [10**9]), ("gen_channels", [10**7, 8, 8])])
def test_model_config_with_huge_sizes_is_refused_on_load(tiny_model_dir, tmp_path, field, value):
    """Issue 27 case 8: a model's config.json with backbone_input_size 20000 passed the load
    checks and segfaulted (rc 139) in build_encoder; every size knob is bounded on load."""
    from bgan_tf.inference.model_folder import read_model_files

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(UserError, match=f"config.json.*--{field} must be"):
        read_model_files(str(model))


def test_evaluate_binary_refuses_a_huge_backbone_input_size_with_one_line(tiny_model_dir, tmp_path):
    """Issue 27 case 8, the command-line form: one error line and exit 2, not rc 139.

    Under a 4 GiB address-space cap (RLIMIT_AS): the refusal needs well under 2 GiB, while a
    regression that builds the encoder asks for a 20000x20000x3 float32 input (4.8 GB) and
    fails within seconds (measured: OOM, rc 1, ~15 s) instead of taking the machine's memory."""
    import resource
    import sys

    from testlib import ROOT

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "backbone_input_size": 20000}))
    r = subprocess.run([sys.executable, "-m", "bgan_tf.evaluate", "--model", str(model), "--report_dir",
                        str(tmp_path / "rep")], cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                       capture_output=True, text=True, timeout=120, preexec_fn=cap)
    line = one_error_line(r)
    assert "backbone_input_size must be an integer from 32 to 512, got 20000" in line


def test_resume_on_another_dataset_is_refused_naming_both(tiny_model_dir, tmp_path):
    """Issue 27 case 14: resuming a run with another --dataset continued silently into a
    different model; now refused before anything changes, naming the old and new value."""
    from bgan_tf.training.trainer import check_run_dir

    run = copy_run(tiny_model_dir, tmp_path / "run")
    np.savez(tmp_path / "other.npz", images=np.zeros((20, 8, 8), np.uint8))
    before = (run / "config.json").read_bytes()
    with pytest.raises(UserError, match=r"trained on --dataset digits \(now npz:.*other\.npz\).*new --output_dir"):
        check_run_dir(tiny_config(run, dataset=f"npz:{tmp_path / 'other.npz'}"))
    with pytest.raises(UserError, match=r"--max_images None \(now 100\)"):
        check_run_dir(tiny_config(run, max_images=100))
    assert (run / "config.json").read_bytes() == before
    check_run_dir(tiny_config(run, epochs=3))  # more epochs on the same data still resume
