"""FractalPriors' compiled path (NaN/inf latents, one graph for every fs and band), trainer.precision bf16-true
(bfloat16 weights whose small AdamW updates round away), boolean prior weights, NaN latents in training."""
from __future__ import annotations

import functools
import logging
import re

import pytest
import torch

from fractals.priors import FractalPriors
from fractals.regularizers import _spec_bins, _spec_loss_binned, l_spec_1overf

KW = dict(warmup_steps=0, fs=250.0, band=(2.0, 80.0), q_vals=[-2, 0, 2], scales=[8, 16, 32], eps_values=[1, 2],
          compile=True)


def _latents(b=2, t=128, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, c, generator=g).cumsum(1) * 0.1 + torch.randn(b, t, c, generator=g)


@pytest.mark.parametrize("lambdas", [{}, {"lambda_mf": 0.0, "lambda_graphfd": 0.0}])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_compiled_priors_refuse_nan_latents_like_eager(bad, lambdas):
    # The graph skips the NaN/inf check (a host sync): compiled, a NaN latent gave a finite loss (0.0814
    # for eager's ValueError) since the dead-channel masks drop it. Checked before the call, no compile needed.
    x = _latents()
    x[0, 3, 1] = bad
    for compile in (True, False):
        with pytest.raises(ValueError, match=r"latents: contains 1 NaN or inf value\(s\) out of 1024"):
            FractalPriors(**{**KW, **lambdas, "compile": compile})(x)


def test_compiled_priors_with_every_term_off_accept_any_latents(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # no codegen: fast
    x = _latents()
    x[0, 0, 0] = float("nan")
    total, _ = FractalPriors(**{**KW, "lambda_spec": 0.0, "lambda_mf": 0.0, "lambda_graphfd": 0.0})(x)
    assert total.item() == 0.0


@pytest.mark.parametrize("fs, band, peaks, dtype", [
    (250.0, (2.0, 80.0), False, torch.float32), (200.0, (2.0, 80.0), True, torch.float32),
    (180.5, (3.0, 500.0), False, torch.float64), (1000.0, (20.0, 400.0), True, torch.bfloat16),
])
def test_binned_spectral_prior_equals_the_sliced_one(fs, band, peaks, dtype):
    # The compiled path reads fs and band from _spec_bins tensors: same value and gradient as l_spec_1overf.
    x0 = _latents(t=256).to(dtype)
    x0[1, :, 2] = 0.5  # a dead channel, left out by both
    grads = []
    for binned in (True, False):
        x = x0.clone().requires_grad_()
        if binned:
            value = _spec_loss_binned(x, _spec_bins(x, fs, band), 1.0, 0.5, exclude_peaks=peaks)
        else:
            value = l_spec_1overf(x, fs, band, 1.0, 0.5, exclude_peaks=peaks)
        value.backward()
        grads.append((value.detach(), x.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-7 if dtype != torch.bfloat16 else 1e-3)


def test_spec_bins_raise_like_the_eager_prior():
    x = _latents(t=64)
    for fs, band in ((250.0, (30.0, 40.0)), (0.0, (2.0, 80.0)), (250.0, (2.0, float("nan")))):
        with pytest.raises(ValueError) as eager:
            l_spec_1overf(x, fs, band, 1.0, 1.0)
        with pytest.raises(ValueError) as binned:
            _spec_bins(x, fs, band)
        assert str(binned.value) == str(eager.value)


def _count_graphs(priors, calls):
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    try:
        out = [priors(x, fs=fs) for x, fs in calls]
        return out, counters["stats"]["unique_graphs"]
    finally:
        dynamo.reset()


def test_compiled_priors_trace_once_for_every_fs_and_band(monkeypatch):
    # fs was a Python float baked into the graph: each new rate (one per modality; the Lightning module also
    # resets priors.band per batch) recompiled the terms, ~10 s each on CPU, up to torch's recompile limit.
    # Dynamo's "eager" backend traces (and guards) like inductor without code generation: ~3 s.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    priors, eager = FractalPriors(**KW), FractalPriors(**{**KW, "compile": False})
    x = _latents()
    calls = [(x, 250.0), (x, 200.0), (x, 250.0), (x, 180.5)]
    out, graphs = _count_graphs(priors, calls)
    priors.band = (3.0, 60.0)
    out2, graphs2 = _count_graphs(priors, [(x, 250.0)])  # reset in between: counts the retrace only
    assert graphs == 1 and graphs2 == 1
    eager_out = [eager(x, fs=fs) for _, fs in calls]
    eager.band = (3.0, 60.0)
    eager_out.append(eager(x, fs=250.0))
    assert len({round(o[0].item(), 6) for o in out}) == 3  # the rate does change the loss
    for (total, parts), (e_total, e_parts) in zip(out + out2, eager_out):
        torch.testing.assert_close(total, e_total, rtol=1e-5, atol=0)
        for k in parts:
            torch.testing.assert_close(parts[k], e_parts[k], rtol=1e-5, atol=1e-9)


@pytest.mark.slow  # inductor code generation of the three priors: ~30-50 s on a loaded 2-core machine
def test_inductor_priors_equal_eager_across_fs_without_recompiling():
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    priors, eager = FractalPriors(**KW), FractalPriors(**{**KW, "compile": False})
    x0 = _latents()
    for fs in (250.0, 200.0, 250.0):
        grads = []
        for p in (priors, eager):
            x = x0.clone().requires_grad_()
            total, _ = p(x, fs=fs)
            total.backward()
            grads.append((total.detach(), x.grad))
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=0)
        torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


# ---------------------------------------------------------------------------------------------- bf16-true
def test_frozen_share_is_what_bfloat16_rounding_does():
    from models._config_options import _frozen_share

    g = torch.Generator().manual_seed(0)
    w = (torch.randn(4096, generator=g) * torch.exp2(torch.randint(-12, 3, (4096,), generator=g).float()))
    w = w.to(torch.bfloat16)
    for rate in (3e-4, 1e-4, 1e-5):
        stuck = float(((w.float() + rate).to(torch.bfloat16) == w).float().mean())
        assert _frozen_share([w], rate) == pytest.approx(stuck, abs=2e-3)
        assert 0.05 < stuck < 0.95  # the grid spans both sides of the threshold
    assert _frozen_share([torch.zeros(3, dtype=torch.bfloat16)], 1e-8) == 0.0


def _fit(precision, caplog, steps=1, lr=3e-4):
    import pytorch_lightning as pl

    from configs import tiny_training_config
    from models.data.datamodule import build_datamodule
    from models.lightning import build_lightning_module

    cfg = tiny_training_config(n_train=4, n_val=4, batch_size=4)
    cfg["fractals"]["enable"] = False
    cfg["optim"].update(lr=lr, warmup_steps=0)
    torch.manual_seed(0)
    module = build_lightning_module(cfg)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, precision=precision,
                         num_sanity_val_steps=0, limit_val_batches=0)
    with caplog.at_level(logging.WARNING, logger="models.lightning"):
        trainer.fit(module, datamodule=build_datamodule(cfg))
    return module, [r.getMessage() for r in caplog.records if r.name == "models.lightning"
                    and "bf16" in r.getMessage()]


def test_bf16_true_fit_warns_that_small_updates_round_away(caplog):
    # Measured (tiny preset, 200 steps, lr 1e-4): bf16-true left 84 % of the weights unchanged and its val loss
    # fell 28 % less than 32-true's, without a word.
    module, said = _fit("bf16-true", caplog, lr=1e-4)
    assert next(module.parameters()).dtype == torch.bfloat16
    assert len(said) == 1, said
    assert "trainer.precision: bf16-true" in said[0] and "trainer.precision=bf16-mixed" in said[0]
    share = re.search(r"optim\.lr=0\.0001 \(Adam's typical step size\) leaves (\d+)% of the weights to train "
                      r"unchanged", said[0])
    assert share and int(share.group(1)) > 50, said[0]  # 78 % for the tiny preset's initial weights


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_float32_weight_fits_do_not_warn(precision, caplog):
    _, said = _fit(precision, caplog)
    assert said == []


@pytest.mark.parametrize("key", ["lambda_spec", "lambda_mf", "lambda_graphfd"])
def test_a_boolean_prior_weight_is_refused(key):
    # `lambda_mf: true` (meaning "on") built the prior at weight 1.0, 50x the default, without a word.
    with pytest.raises(ValueError, match=rf"{key}: must be a finite number >= 0, got True"):
        FractalPriors.from_config({"enable": True, "priors": {key: True}})
    with pytest.raises(ValueError, match="weight: must be a finite number >= 0, got False"):
        l_spec_1overf(_latents(), 250.0, (2.0, 80.0), 1.0, False)


def test_nan_latents_in_training_are_reported_as_divergence_not_short_windows():
    # A diverged model's NaN latents were reported as "cannot be computed ... Use longer windows".
    from configs import tiny_training_config
    from models.data.datamodule import build_datamodule
    from models.lightning import NeuroFMxModule

    torch.manual_seed(0)
    module = NeuroFMxModule(tiny_training_config(warmup_steps=0))
    dm = build_datamodule(module.cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        next(module.model.backbone.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match=r"SSM latents hold NaN/inf at step 0: the model diverged") as err:
        module.training_step(batch, 0)
    assert "longer windows" not in str(err.value)
