"""The prior schedule of NeuroFMxModule (`fractals.priors.ramp_steps`) and the acceptance verdict of
benchmarks/model.py (mean ratio over seeds, not one seed)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from models.data.datamodule import build_datamodule
from models.lightning import NeuroFMxModule

from configs import tiny_training_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**priors) -> dict:
    return tiny_training_config(n_train=4, lambda_spec=0.05, lambda_mf=0.0, lambda_graphfd=0.0, **priors)


def test_prior_scale_is_zero_before_warmup_then_ramps_linearly_to_one():
    module = NeuroFMxModule(_cfg(warmup_steps=10, ramp_steps=4))
    assert [module.prior_scale(s) for s in (0, 9, 10, 11, 12, 13, 14, 100)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    no_ramp = NeuroFMxModule(_cfg(warmup_steps=10))  # the default: full weight at warmup_steps
    assert (no_ramp.prior_ramp, no_ramp.prior_scale(9), no_ramp.prior_scale(10)) == (0, 0.0, 1.0)


def test_prior_loss_is_scaled_by_the_ramp_and_ramp_steps_does_not_reach_fractal_priors():
    full = NeuroFMxModule(_cfg(warmup_steps=0))
    ramped = NeuroFMxModule(_cfg(warmup_steps=0, ramp_steps=4))  # FractalPriors would reject the key
    dm = build_datamodule(full.cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = full(batch)  # same latents for both: the priors have no parameters
    want, want_parts = full._prior_loss(out, batch)
    got, parts = ramped._prior_loss(out, batch)  # global_step 0 -> scale 1/4
    torch.testing.assert_close(got, 0.25 * want)
    torch.testing.assert_close(parts["spec"], 0.25 * want_parts["spec"])
    assert want > 0


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_bad_ramp_steps_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="fractals.priors.ramp_steps"):
        NeuroFMxModule(_cfg(ramp_steps=bad))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "benchmarks" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_acceptance_verdict_uses_the_mean_paired_ratio():
    bench = _bench()
    row = lambda loss, beta: {"val_task_loss": loss, "latent_beta": beta}  # noqa: E731
    # Seed 1 alone misses 1 %, the mean over seeds meets it: the verdict follows the mean.
    pairs = [(row(4.0, 1.3), row(4.0, 0.9)), (row(2.0, 1.4), row(2.04, 1.0)), (row(3.0, 1.2), row(2.94, 1.1))]
    v = bench.acceptance_verdict(pairs)
    assert v["task_loss_ratios"] == [1.0, 1.02, 0.98]
    assert v["task_loss_ratio_mean"] == 1.0 and v["task_loss_ratio_sd"] == 0.02
    assert v["baseline_task_loss_mean"] == 3.0 and v["prior_beta_mean"] == 1.0
    assert v["pass"] and v["task_loss_within_1pct"] and v["beta_in_0.8_1.2"]
    miss = bench.acceptance_verdict([(row(2.0, 1.3), row(2.05, 1.0)), (row(2.0, 1.3), row(2.03, 1.0))])
    assert miss["task_loss_ratio_mean"] == 1.02 and not miss["pass"]
    off_beta = bench.acceptance_verdict([(row(2.0, 1.3), row(2.0, 0.7))])
    assert off_beta["task_loss_within_1pct"] and not off_beta["beta_in_0.8_1.2"] and not off_beta["pass"]
    with pytest.raises(ValueError, match="pairs"):
        bench.acceptance_verdict([])


def test_acceptance_resumes_from_out_without_training_again(tmp_path):
    bench = _bench()
    out = tmp_path / "acc.json"
    rows = [{"bench": "acceptance", "preset": "tiny", "seed": s, "lambda_spec": lam, "steps": 40,
             "prior_opts": {"ramp_steps": 8} if lam else {}, "val_task_loss": loss, "latent_beta": beta, "fit_s": 1.0}
            for s, lam, loss, beta in [(0, 0.0, 2.0, 1.3), (0, 0.05, 2.02, 1.0), (1, 0.0, 3.0, 1.2), (1, 0.05, 3.0, 0.9)]]
    out.write_text(json.dumps({"rows": rows}))
    args = bench.argparse.Namespace(quick=True, device="cpu", device_name="cpu", acceptance_steps=40, seeds=2,
                                    seed0=0, prior_opts={"ramp_steps": 8}, out=out)
    bench._fit_arm = None  # any training would fail: every arm must come from the file
    verdict = bench.bench_acceptance(args)[-1]["verdict"]
    assert verdict["task_loss_ratios"] == [1.01, 1.0] and verdict["seeds"] == 2
    args.prior_opts = {"ramp_steps": 16}  # other prior options: not the same arm, so it would train
    with pytest.raises(TypeError):
        bench.bench_acceptance(args)
    out.write_text("not json")
    with pytest.raises(ValueError, match="--out"):
        bench.bench_acceptance(args)
