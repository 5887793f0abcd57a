"""fmx.acceptance: the section-14 report's metrics and JSON verdict (server-free)."""
from __future__ import annotations

from fmx.acceptance import AcceptanceReport, run_acceptance, training


def test_report_without_any_verdict_does_not_claim_all_pass():
    # nothing was verified (no checkpoint for ablation/stability): the JSON must not say all_pass = true
    report = run_acceptance(["ablation", "stability"], cfg={})
    assert report.results == {"ablation": {"reason": "no checkpoint"}, "stability": {"reason": "no checkpoint"}}
    assert report.to_dict()["all_pass"] is None
    assert report.metrics() == {}


def test_all_pass_follows_the_verdicts():
    cfg = {"fractals": {"priors": {"spectral_beta_target": 1.0}}}
    ok = training(cfg=cfg, metrics={"val/latent_beta": 1.15})
    bad = training(cfg=cfg, metrics={"val/latent_beta": 1.25})
    assert ok["pass"] and not bad["pass"]
    assert AcceptanceReport({"training": ok, "speed": {"ms": 5.0}}).to_dict()["all_pass"] is True
    report = AcceptanceReport({"training": bad, "speed": {"ms": 5.0}})
    assert report.to_dict()["all_pass"] is False
    assert report.metrics()["acceptance/training_pass"] == 0.0
    assert report.metrics()["acceptance/training_beta_gap"] == 0.25


class _DirCheckpoint:
    """The one method of ray.train.Checkpoint that acceptance uses (importing Ray costs seconds)."""

    def __init__(self, path):
        self.path = str(path)

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(self.path)


class _TinyModule(__import__("torch").nn.Linear):
    def __init__(self, cfg):
        super().__init__(2, 1)

    def forward(self, batch):
        return {"loss": super().forward(batch).pow(2).mean()}

    def sample_rate(self, batch):
        return 100.0


class _NoValidationData:
    def __init__(self, cfg):
        pass

    def prepare_data(self):
        pass

    def setup(self, stage):
        pass

    def val_dataloader(self):
        return []


def test_ablation_without_validation_batches_is_a_reason_not_a_crash(tmp_path):
    import torch

    from fmx.train_worker import CKPT_NAME

    torch.save({"state_dict": _TinyModule({}).state_dict()}, tmp_path / CKPT_NAME)
    builders = {"module": f"{__name__}:_TinyModule", "data": f"{__name__}:_NoValidationData"}
    report = run_acceptance(["ablation"], cfg={}, checkpoint=_DirCheckpoint(tmp_path), builders=builders)
    assert "no validation batch" in report.results["ablation"]["reason"]
    assert report.to_dict()["all_pass"] is None


def test_numerics_fails_when_an_estimator_returns_nan(monkeypatch):
    # a broken estimator (NaN on some device) must fail the benchmark, not count as zero error
    import torch

    from fmx.acceptance import numerics
    from fractals import metrics as fm

    monkeypatch.setattr(fm, "dfa_alpha", lambda x, *a, **k: torch.full(x.shape[:-1], float("nan")))
    res = numerics(n=1024)
    assert res["dfa_max_err"] != res["dfa_max_err"] and res["pass"] is False


def test_sweep_training_verdict_needs_more_than_99_percent_of_the_baseline():
    import pandas as pd

    from fmx.compare import sweep_acceptance

    lam = "cfg.fractals.priors.lambda_spec"
    exactly = pd.DataFrame({lam: [0.0, 0.05], "val/loss": [0.99, 1.0]})  # keeps exactly 99 %: not more
    assert sweep_acceptance(exactly)["acceptance/training_baseline_pass"] == 0.0
    above = pd.DataFrame({lam: [0.0, 0.05], "val/loss": [0.99, 0.995]})
    out = sweep_acceptance(above)
    assert out["acceptance/training_baseline_pass"] == 1.0 and out["acceptance/training_baseline_loss"] == 0.99
