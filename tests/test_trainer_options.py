"""The trainer config keys a trial reads are checked at submission (unknown keys used to be ignored)."""
import pytest

from fmx.config import compose
from fmx.config import TRAINER_KEYS, trainer_options


def test_shipped_trainer_config_maps_to_lightning_arguments():
    opts = trainer_options(compose(["model=tiny", "data=synthetic"])["trainer"])
    assert opts["max_epochs"] == 2 and opts["accumulate_grad_batches"] == 1 and opts["precision"] == "32-true"
    assert "batch_size" not in opts and "find_unused_parameters" not in opts  # not Trainer arguments


def test_accumulate_grad_batches_reaches_the_trainer():
    cfg = compose(["trainer.accumulate_grad_batches=4"])  # in conf/trainer/default.yaml, so a sweep can sample it
    assert trainer_options(cfg["trainer"])["accumulate_grad_batches"] == 4


@pytest.mark.parametrize("override, match", [
    ("+trainer.gradient_clip_val=1.0", r"trainer\.gradient_clip_val: no trial reads.*model\.optim\.grad_clip"),
    ("+trainer.fast_dev_run=true", r"trainer\.fast_dev_run: no trial reads this key; allowed trainer keys: "
                                   r"accumulate_grad_batches"),
    ("trainer.accumulate_grad_batches=0", r"trainer\.accumulate_grad_batches: needs an integer >= 1, got 0"),
    ("trainer.max_epochs=1.5", r"trainer\.max_epochs: needs an integer >= 1, got 1\.5"),
])
def test_bad_trainer_keys_are_named(override, match):
    with pytest.raises(ValueError, match=match):
        trainer_options(compose([override])["trainer"])


def test_plan_refuses_an_ignored_trainer_key(tmp_path):
    from fmx.runner import make_plan
    from fmx.schema import load_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\nbase: [model=tiny, data=synthetic, +trainer.gradient_clip_val=0.5]\n"
                          "method: random\nmetric: {name: val/loss, goal: minimize}\nparameters: {}\nrun_cap: 1\n")
    sweep = load_sweep(sweep_file, check_config=False)
    with pytest.raises(ValueError, match="trainer.gradient_clip_val"):
        make_plan(sweep, sweep_id="x", root=tmp_path, env={})


def test_every_trainer_key_a_trial_reads_is_in_the_shipped_config():
    # accumulate_grad_batches was missing: a sweep sampling it failed to compose (KeyError)
    shipped = set(compose([])["trainer"])
    assert shipped == set(TRAINER_KEYS)


def test_validate_names_an_ignored_trainer_key_in_base(tmp_path):
    from fmx.schema import SweepFileError, load_sweep

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\nbase: [model=tiny, data=synthetic, +trainer.gradient_clip_val=0.5]\n"
                          "method: random\nmetric: {name: val/loss, goal: minimize}\nparameters: {}\nrun_cap: 1\n")
    with pytest.raises(SweepFileError, match=r"s\.yaml: base: trainer\.gradient_clip_val: no trial reads"):
        load_sweep(sweep_file)


def test_the_worker_uses_the_same_checked_options():
    import fmx.train_worker as tw

    assert tw.trainer_options is trainer_options and tw.TRAINER_KEYS is TRAINER_KEYS

