"""Review of NeuroFMx training under Lightning, run as a user would: DDP validation metrics when a head has
nothing to score on one rank, mid-epoch resume, loss composition, accumulation, autocast, checkpoints.

Run as a script (``python tests/test_training_review.py OUT``) it is one rank of the 2-process gloo DDP run
that :func:`test_ddp_ranks_log_the_same_validation_keys_with_global_means` launches.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from configs import tiny_training_config
from ddp_ranks import run_ranks
from models.data.batch import collate_batch
from models.data.datamodule import build_datamodule
from models.lightning import build_lightning_module

REPO = Path(__file__).resolve().parents[1]
_QUIET = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0)


class _Indexed(Dataset):
    """A dataset's samples plus their ``index``; ``hide(i)`` names the modalities whose channels are all masked."""

    def __init__(self, base, hide=lambda i: ()):
        self.base, self.hide = base, hide

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        sample = dict(self.base[i], index=i)
        if "behavior" in sample:  # every sample carries the key, so mixed batches collate
            sample["behavior_mask"] = torch.ones(sample["behavior"].shape[1], dtype=torch.bool)
        for key in self.hide(i):
            axis = 1 if key in ("spikes", "behavior") else 0
            sample[f"{key}_mask"] = torch.zeros(sample[key].shape[axis], dtype=torch.bool)
        return sample


class _Data(pl.LightningDataModule):
    def __init__(self, cfg, *, batch_size=2, hide_val=lambda i: ()):
        super().__init__()
        self.inner, self.batch_size, self.hide_val = build_datamodule(cfg), batch_size, hide_val

    def train_dataloader(self):
        return DataLoader(_Indexed(self.inner.train_set), batch_size=self.batch_size, collate_fn=collate_batch)

    def val_dataloader(self):
        return DataLoader(_Indexed(self.inner.val_set, self.hide_val), batch_size=self.batch_size,
                          collate_fn=collate_batch)


def _cfg(**kw) -> dict:
    cfg = tiny_training_config(**kw)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1000, tb_hist_every_n=1000)
    return cfg


# ----------------------------------------------------------------------------- validation metrics under DDP
class _FakeStrategy:
    """The other rank's (sums, counts), added as an all-reduce would."""

    def __init__(self, other):
        self.other, self.calls = other, 0

    def reduce(self, tensor, reduce_op=None):
        assert reduce_op == "sum"
        self.calls += 1
        return tensor + self.other


def test_global_means_leave_out_ranks_that_had_nothing_to_score():
    from types import SimpleNamespace

    from models.callbacks import global_means

    keys = ["a", "b", "c"]
    mine = torch.tensor([[6.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # this rank: a scored (mean 3), b and c never
    other = torch.tensor([[2.0, 10.0, 0.0], [2.0, 4.0, 0.0]])  # other rank: a mean 1, b mean 2.5
    strategy = _FakeStrategy(other)
    out = global_means(SimpleNamespace(world_size=2, strategy=strategy), keys, mine)
    assert strategy.calls == 1 and list(out) == ["a", "b"]  # one reduction; c counted nowhere: left out
    assert float(out["a"]) == pytest.approx(2.0) and float(out["b"]) == pytest.approx(2.5)
    single = global_means(SimpleNamespace(world_size=1, strategy=None), keys, mine)
    assert list(single) == ["a"] and float(single["a"]) == pytest.approx(3.0)


def _ddp_rank(out_dir: str) -> None:
    """One rank of the DDP run (launched with LOCAL_RANK etc. in the environment by the test below)."""
    import datetime

    from pytorch_lightning.strategies import DDPStrategy

    from models.callbacks import CausalScaleAblationCallback, latent_measures

    torch.set_num_threads(1)
    cfg = _cfg(n_train=4, n_val=4, batch_size=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1, tb_hist_every_n=1)

    class Record(pl.Callback):
        """Each rank's own numbers on its validation batch, after the one training step."""

        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            self.batch = batch

        def on_fit_end(self, trainer, module):
            module.eval()
            with torch.no_grad():
                out = module(self.batch)
            local = {f"val/{n}_loss": float(out["losses"][n]) for n in out.get("scored", out["losses"])}
            local["val/loss"] = float(out["loss"])
            abl = cfg["fractals"]["probes"]["causal_scale_ablation"]
            ablation = CausalScaleAblationCallback(mode=abl["mode"], ablate_ratio=abl["ablate_ratio"],
                                                   cfg_fractals=module.fractals_cfg)
            with torch.no_grad():
                broken = module(ablation.ablate(self.batch, module.sample_rate(self.batch)))
            local["val/ablation_delta_loss"] = float(broken["loss"] - out["loss"])
            fs = module.latent_rate(self.batch)
            measures = latent_measures(out["latents"]["ssm"], fs=fs, cfg_fractals=module.fractals_cfg)
            ablated = latent_measures(broken["latents"]["ssm"], fs=fs, cfg_fractals=module.fractals_cfg)
            for name, v in measures.items():
                local[f"val/latent_{name}"] = float(v.mean())
                local[f"val/ablation_delta_{name}"] = float(ablated[name].mean() - v.mean())
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            with torch.no_grad():  # val/loss: the weighted total of the heads' global epoch means
                local["weighted_total"] = float(module.model.loss_weighting(
                    {n: torch.tensor(metrics[f"val/{n}_loss"]) for n in module.model.loss_names
                     if f"val/{n}_loss" in metrics}))
            Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps({"metrics": metrics,
                                                                                  "local": local}))

    # DistributedSampler without shuffling: rank 0 validates samples 0 and 2, rank 1 samples 1 and 3, whose
    # behaviour is all padding, so rank 1 never scores the behaviour head.
    data = _Data(cfg, hide_val=lambda i: ("behavior",) if i % 2 else ())
    trainer = pl.Trainer(max_steps=1, limit_train_batches=1, accelerator="cpu", devices=2, logger=False,
                         strategy=DDPStrategy(process_group_backend="gloo", find_unused_parameters=True,
                                              timeout=datetime.timedelta(seconds=30)),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[Record()])
    trainer.fit(build_lightning_module(cfg), datamodule=data)


@pytest.mark.slow
def test_ddp_ranks_log_the_same_validation_keys_with_global_means(tmp_path):
    """Real 2-process gloo DDP. Rank 1's validation batches have no behaviour: it used to never log
    val/behavior_loss while rank 0 did, so Lightning's epoch-end sync paired mismatched collectives (a crash, a
    hang, or one rank's val/latent_hfd averaged with the other's val/latent_beta). Different hash seeds per rank
    also gave the ablation metrics a different order on each rank (they came from a set)."""
    run_ranks(__file__, [tmp_path], timeout_s=120, rank_env=lambda rank: {"PYTHONHASHSEED": str(rank)},
              hang="the DDP run hung (a metric logged with sync_dist on one rank only?)")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    val0 = {k: v for k, v in ranks[0]["metrics"].items() if k.startswith("val/")}
    val1 = {k: v for k, v in ranks[1]["metrics"].items() if k.startswith("val/")}
    assert list(val0) == list(val1), (sorted(val0), sorted(val1))
    local0, local1 = ranks[0]["local"], ranks[1]["local"]
    assert "val/behavior_loss" in local0 and "val/behavior_loss" not in local1
    # Rank 1 adds nothing to the behaviour loss: the global mean is rank 0's, not half of it.
    assert val0["val/behavior_loss"] == pytest.approx(local0["val/behavior_loss"], rel=1e-5)
    expected = {"val/forecast_lfp_loss", "val/forecast_spikes_loss", "val/loss", "val/latent_beta", "val/latent_hfd",
                "val/latent_dfa", "val/ablation_delta_loss", "val/ablation_delta_beta", "val/ablation_delta_hfd",
                "val/ablation_delta_dfa"}
    assert expected | {"val/behavior_loss"} == set(val0)
    # Rank 1 scores no behaviour: val/loss is the weighted total of the heads' global means, not the mean of the
    # ranks' totals (which fell with the share of batches missing a head).
    assert val0["val/loss"] == pytest.approx(val1["val/loss"], rel=1e-6)
    assert val0["val/loss"] == pytest.approx(local0["weighted_total"], rel=1e-5)
    for key in expected - {"val/loss"}:  # one batch of 2 per rank: the plain mean of the two ranks
        assert val0[key] == pytest.approx(val1[key], rel=1e-6, abs=1e-7), key
        assert val0[key] == pytest.approx((local0[key] + local1[key]) / 2, rel=1e-4, abs=1e-6), key
    hfd = val0["val/latent_hfd"]
    assert hfd >= 1.0 and hfd <= 2.0, hfd  # a Higuchi FD, not an average with some other measure


# ----------------------------------------------------------------------------- validation metrics, one process
def test_val_loss_leaves_out_batches_where_no_head_scored():
    """A validation batch where every channel and feature is padding scores nothing: its 'loss' is the
    uncertainty weights' regulariser over zero losses (0 at init), and it halved val/loss here."""
    cfg = _cfg(n_train=2, n_val=4, batch_size=2)
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    data = _Data(cfg, hide_val=lambda i: ("lfp", "spikes", "behavior") if i >= 2 else ())
    metrics = pl.Trainer(**_QUIET).validate(module, datamodule=data, verbose=False)[0]
    module.eval()
    with torch.no_grad():
        first = module(next(iter(data.val_dataloader())))
    assert metrics["val/loss"] == pytest.approx(float(first["loss"]), rel=1e-5)
    assert metrics["val/behavior_loss"] == pytest.approx(float(first["losses"]["behavior"]), rel=1e-5)


# ----------------------------------------------------------------------------- loss composition
def _train_batch(cfg, n=2):
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return collate_batch([dm.train_set[i] for i in range(n)])


def test_a_batch_where_no_head_scores_leaves_the_uncertainty_weights_alone():
    """Every channel and feature padded: the heads' losses are zeros, but their uncertainty-weighted sum
    still held ``0.5 * s_i`` per head, whose gradient (0.5) moved every log-variance (by ~lr per Adam step)
    and so raised every task weight on batches that carried nothing to learn from."""
    cfg = _cfg()
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    batch = _train_batch(cfg)
    for key in ("lfp", "spikes"):
        batch[f"{key}_mask"] = torch.zeros_like(batch[f"{key}_mask"])
    batch["behavior_mask"] = torch.zeros(batch["behavior"].shape[::2], dtype=torch.bool)
    out = module(batch)
    assert out["scored"] == ()
    out["loss"].backward()
    log_vars = module.model.loss_weighting.log_vars
    grads = {n: 0.0 if p.grad is None else float(p.grad) for n, p in log_vars.items()}
    assert grads == {n: 0.0 for n in log_vars}, grads
    assert float(out["loss"].detach()) == 0.0


def _contrastive_model(pairing):
    cfg = _cfg()
    cfg["model"]["heads"]["contrastive"] = {"view": "behavior", "dim_b": 2, "proj_dim": 16, "pairing": pairing}
    torch.manual_seed(0)
    return build_lightning_module(cfg).eval(), _train_batch(cfg, n=3)


def _rows(batch, rows):
    return {k: v[rows] if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == 3 else v for k, v in batch.items()}


@pytest.mark.parametrize("pairing", ["sample", "time"])
def test_contrastive_pairs_leave_out_samples_whose_behaviour_is_missing(pairing):
    """behavior_mask all False for a sample: its view is zeros, a constant embedding. It used to count as a
    positive pair (and as everyone's negative), and a batch with no behaviour at all scored the contrastive head
    with a gradient-free log(B)."""
    module, batch = _contrastive_model(pairing)
    batch["behavior_mask"] = torch.tensor([[False, False], [True, True], [True, True]])
    with torch.no_grad():
        out, ref = module(batch), module(_rows(batch, slice(1, 3)))
    assert "contrastive" in out["losses"]
    torch.testing.assert_close(out["losses"]["contrastive"], ref["losses"]["contrastive"])
    batch["behavior_mask"] = torch.zeros(3, 2, dtype=torch.bool)
    with torch.no_grad():
        out = module(batch)
    assert "contrastive" not in out["losses"] and "behavior" not in out["losses"]  # the forecasts scored
    assert torch.isfinite(out["loss"])


def test_contrastive_sample_pairs_need_two_samples_with_behaviour():
    module, batch = _contrastive_model("sample")
    batch["behavior_mask"] = torch.tensor([[False, False], [False, False], [True, True]])
    with torch.no_grad():
        out = module(batch)
    assert "contrastive" not in out["losses"] and "behavior" in out["losses"]


def test_priors_that_cannot_fit_the_latents_fail_on_the_first_batch_not_when_warmup_ends():
    """64-sample windows give the tiny model 16 latent steps, too few for the multifractal prior's scales:
    training ran through the whole prior warmup (1000 steps by default) and then died with an error about
    'scales' that named neither the priors nor the window length."""
    cfg = _cfg(n_train=2, n_val=2, batch_size=2, warmup_steps=1000)
    cfg["data"]["n_time"] = 64
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    module = build_lightning_module(cfg)
    with pytest.raises(ValueError, match=r"fractals\.priors: .*16 steps.*data\.n_time"):
        pl.Trainer(**_QUIET, max_steps=1, limit_val_batches=0).fit(module, datamodule=build_datamodule(cfg))
    assert module.global_step == 0
    cfg["fractals"]["priors"].update(lambda_mf=0.0, lambda_spec=0.0)  # the terms that need longer windows
    pl.Trainer(**_QUIET, max_steps=1, limit_val_batches=0).fit(build_lightning_module(cfg),
                                                               datamodule=build_datamodule(cfg))


# ----------------------------------------------------------------------------- a real run: accumulation, bf16
def test_accumulated_bf16_run_steps_lr_and_priors_by_optimizer_step(tmp_path):
    """accumulate_grad_batches=2 under bf16-mixed on CPU: the LR follows warmup_cosine per optimizer step
    (total from the trainer), the priors switch on at global_step == warmup (not at micro-batch 2)."""
    import csv

    from pytorch_lightning.loggers import CSVLogger

    from models.lightning import warmup_cosine

    cfg = _cfg(n_train=8, n_val=2, batch_size=1, warmup_steps=2)
    cfg["fractals"]["probes"]["causal_scale_ablation"]["enable"] = False
    cfg["optim"].update(warmup_steps=2)
    trainer = pl.Trainer(**dict(_QUIET, logger=CSVLogger(tmp_path, name="acc")), max_steps=4,
                         accumulate_grad_batches=2, precision="bf16-mixed", log_every_n_steps=1, limit_val_batches=0)
    torch.manual_seed(0)
    trainer.fit(build_lightning_module(cfg), datamodule=build_datamodule(cfg))
    assert trainer.global_step == 4
    rows = {int(r["step"]): r for r in csv.DictReader(open(Path(trainer.logger.log_dir) / "metrics.csv"))}
    assert sorted(rows) == [0, 1, 2, 3]
    for step, row in rows.items():
        expected = cfg["optim"]["lr"] * warmup_cosine(step, warmup_steps=2, total_steps=4)
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-6), step
        assert bool(row["train/prior_loss"]) == (step >= 2), (step, row["train/prior_loss"])
        assert torch.isfinite(torch.tensor(float(row["train/loss"])))


@pytest.mark.realdata
def test_checkpoint_of_a_model_fitted_to_real_eeg_reloads_with_its_fitted_config(tmp_path, shared_data):
    """build_module_and_data adds an eeg tokenizer and head to the tiny preset for 19-channel EEG: the
    checkpoint must carry that fitted config, so load_from_checkpoint rebuilds the same model."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from models.lightning import NeuroFMxModule
    from models.registry import build_module_and_data

    with initialize_config_dir(config_dir=str(REPO / "platform" / "fmx" / "conf"), version_base=None):
        cfg = OmegaConf.to_container(compose("config", overrides=[
            "model=tiny", "data=files", f"data.root={shared_data / 'eegmat-dev'}", "data.max_files=4",
            "trainer.batch_size=4"]), resolve=True)
    torch.manual_seed(0)
    module, data = build_module_and_data(cfg)
    trainer = pl.Trainer(**_QUIET, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, datamodule=data)
    assert "val/forecast_eeg_loss" in trainer.callback_metrics
    trainer.save_checkpoint(tmp_path / "eeg.ckpt")
    restored = NeuroFMxModule.load_from_checkpoint(tmp_path / "eeg.ckpt")
    assert restored.cfg == module.cfg and "eeg" in restored.cfg["model"]["tokenizers"]
    batch = next(iter(data.val_dataloader()))
    module.eval()
    restored.eval()
    with torch.no_grad():
        a, b = module(batch), restored(batch)
    assert list(a["losses"]) == list(b["losses"]) == ["forecast_eeg"]
    torch.testing.assert_close(b["loss"], a["loss"])


# ----------------------------------------------------------------------------- resume
class _Seen(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, int(batch["index"][0])))


class _SaveAtStep(pl.Callback):
    def __init__(self, step, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_mid_epoch_resume_says_which_batches_come_again(tmp_path, caplog):
    """Lightning restarts our (not resumable) train loader from its first batch after a mid-epoch checkpoint:
    the resumed epoch trains batches 0-1 again and never 4-5. That must be said, not happen silently."""
    cfg = _cfg(n_train=6, n_val=2, batch_size=1)
    cfg["fractals"]["enable"] = False
    kw = dict(_QUIET, max_epochs=1, limit_val_batches=0)
    ckpt = tmp_path / "mid.ckpt"
    pl.Trainer(callbacks=[_SaveAtStep(2, ckpt)], **kw).fit(build_lightning_module(cfg),
                                                           datamodule=_Data(cfg, batch_size=1))
    seen = _Seen()
    with caplog.at_level(logging.WARNING, logger="models.lightning"):
        pl.Trainer(callbacks=[seen], **kw).fit(build_lightning_module(cfg), datamodule=_Data(cfg, batch_size=1),
                                               ckpt_path=ckpt)
    assert [i for _, i in seen.seen] == [0, 1, 2, 3]  # what Lightning does: the warning must match it
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "models.lightning")
    assert "inside epoch 0 after 2 of its 6 training batches" in text, text
    assert "batches 0-1 of the epoch are trained on twice" in text and "batches 4-5 not at all" in text, text


def test_end_of_epoch_resume_is_quiet(tmp_path, caplog):
    cfg = _cfg(n_train=2, n_val=2, batch_size=1)
    cfg["fractals"]["enable"] = False
    cfg["optim"]["warmup_steps"] = 1  # a 4-step fit: the default warmup would be warned about
    kw = dict(_QUIET, limit_val_batches=0)
    first = pl.Trainer(max_epochs=1, **kw)
    first.fit(build_lightning_module(cfg), datamodule=_Data(cfg, batch_size=1))
    first.save_checkpoint(tmp_path / "end.ckpt")
    seen = _Seen()
    with caplog.at_level(logging.WARNING, logger="models.lightning"):
        pl.Trainer(max_epochs=2, callbacks=[seen], **kw).fit(build_lightning_module(cfg),
                                                             datamodule=_Data(cfg, batch_size=1),
                                                             ckpt_path=tmp_path / "end.ckpt")
    assert seen.seen == [(1, 0), (1, 1)]
    assert not [r for r in caplog.records if r.name == "models.lightning"]


if __name__ == "__main__":
    _ddp_rank(sys.argv[1])
