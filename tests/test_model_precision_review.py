"""The model families under the precisions a user sets in ``trainer.precision`` (CPU: bf16 autocast, bf16/fp16/
float64 weights) and the portable SSD scan and fractional kernels in low precision.

Measured (CPU, relative L2 error against float64 on the same rounded inputs): the portable SSD scan is 1.6e-3 in
bf16 and 2e-4 in fp16 at T = 64, 512 and 4096 alike (it upcasts to float32), a whole Mamba-2 block 6e-3 in bf16."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from configs import tiny_training_config


def _trainer(precision, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


def _moons_cfg(mode="fixed"):
    return {"model": {"family": "two_moons", "width": 8, "depth": 2, "mode": mode, "update_every": 1, "target": 1.0,
                      "weight": 5.0, "lr": 0.03},
            "data": {"name": "two_moons", "n_train": 64, "n_val": 32, "batch_size": 32}, "seed": 0}


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_two_moons_trains_and_validates_with_bf16_weights(mode):
    # bf16-true: validation's sigma_mean crashed in torch.linalg.matrix_norm ("Low precision dtypes not supported").
    from models.criticality.two_moons import build_datamodule, build_lightning_module

    pl.seed_everything(0, verbose=False)
    cfg = _moons_cfg(mode)
    module, data = build_lightning_module(cfg), build_datamodule(cfg)
    trainer = _trainer("bf16-true", max_epochs=1)
    trainer.fit(module, data)
    m = trainer.callback_metrics
    assert math.isfinite(float(m["val/sigma_mean"])) and float(m["val/sigma_mean"]) > 0
    assert next(module.parameters()).dtype == torch.bfloat16


def _byte_cfg(path):
    return {"seed": 0, "model": {"family": "fractal_byte", "d_model": 16, "n_layers": 1, "n_fractals": 1,
                                 "depth_range": [1, 1], "dim_range": [16, 16], "lr": 0.02, "drop_path": 0.0,
                                 "mamba": {"d_state": 8, "headdim": 8, "chunk_size": 16}},
            "data": {"name": "bytes", "path": str(path), "seq_len": 16, "batch_size": 4, "windows_per_epoch": 8}}


@pytest.mark.parametrize("family", ["neurofmx", "fractal_byte", "two_moons"])
def test_float16_weights_are_refused_naming_trainer_precision(family, tmp_path):
    # 16-true made AdamW's eps (1e-8) round to 0 in float16: every weight with a zero gradient became 0/0 = NaN at
    # the first step. NeuroFMx then failed blaming the window length; fractal_byte logged train/loss nan for the run.
    from models.registry import build_datamodule, build_lightning_module

    if family == "neurofmx":
        cfg = tiny_training_config(warmup_steps=0)
    elif family == "fractal_byte":
        (tmp_path / "c.txt").write_text("the quick brown fox jumps over the lazy dog. " * 4)
        cfg = _byte_cfg(tmp_path)
    else:
        cfg = _moons_cfg()
    torch.manual_seed(0)
    module, data = build_lightning_module(cfg), build_datamodule(cfg)
    with pytest.raises(ValueError, match=r"trainer\.precision.*16-true.*16-mixed"):
        _trainer("16-true", max_steps=2).fit(module, data)


def test_two_moons_figure_from_bf16_weights_and_points():
    # numpy has no bfloat16: the decision-boundary figure of a bf16-true trial failed with "Got unsupported
    # ScalarType BFloat16" (the platform then skipped it).
    from models.criticality.two_moons import build_lightning_module, make_moons

    module = build_lightning_module(_moons_cfg()).to(torch.bfloat16)
    x, y = make_moons(32, generator=torch.Generator().manual_seed(0))
    figs = module.figures((x.to(torch.bfloat16), y))
    assert list(figs) == ["decision_boundary"]
    import matplotlib.pyplot as plt

    plt.close(figs["decision_boundary"])


def _ssd_inputs(t, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, p, n = 2, 8, 8
    x = torch.randn(1, t, h, p, generator=g, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(1, t, h, generator=g, dtype=torch.float64) - 2)
    a = -torch.exp(torch.rand(h, generator=g, dtype=torch.float64) * 2.7)
    b, c = (torch.randn(1, t, 1, n, generator=g, dtype=torch.float64) for _ in range(2))
    return [v.to(dtype) for v in (x, dt, a, b, c)]


@pytest.mark.parametrize("t", [64, 4096])
def test_portable_ssd_in_half_precision_keeps_its_error_at_any_length(t):
    # The decays are exp(cumsum): the scan upcasts to float32, so bf16's error is its output rounding at any length.
    from models.backbones.ssd import ssd_chunked

    for dtype, tol in ((torch.bfloat16, 4e-3), (torch.float16, 5e-4)):
        args = _ssd_inputs(t, dtype)
        y, state = ssd_chunked(*args)
        ref, ref_state = ssd_chunked(*[a.double() for a in args])
        assert y.dtype == dtype and state.dtype == torch.float32
        assert float((y.double() - ref).norm() / ref.norm()) < tol
        assert float((state.double() - ref_state).norm() / ref_state.norm()) < 1e-5
    args = _ssd_inputs(t, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = ssd_chunked(*args)
    ref, _ = ssd_chunked(*[a.double() for a in args])
    assert y.dtype == torch.float32 and float((y.double() - ref).norm() / ref.norm()) < 1e-6


def test_fractional_fft_path_under_bf16_autocast_and_in_float16():
    # torch.fft has no bf16 kernel on CPU: the FFT path (n_taps >= fft_threshold) computes in float32.
    import copy

    from models.backbones.fractional import FractionalKernel

    k = FractionalKernel(n_taps=128, min_alpha=0.1, max_alpha=1.0, channels=4).double()
    x = torch.randn(2, 4, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        ref = k(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = copy.deepcopy(k).float()(x.float())
        assert float((y.double() - ref).norm() / ref.norm()) < 1e-6
        for dtype, tol in ((torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
            y = copy.deepcopy(k).to(dtype)(x.to(dtype))
            assert y.dtype == dtype and float((y.double() - ref).norm() / ref.norm()) < tol


def test_bf16_true_checkpoint_loads_into_float32_with_the_same_weights(tmp_path):
    from models.data.datamodule import build_datamodule
    from models.lightning import NeuroFMxModule, build_lightning_module

    cfg = tiny_training_config(warmup_steps=0)
    torch.manual_seed(0)
    module, data = build_lightning_module(cfg), build_datamodule(cfg)
    trainer = _trainer("bf16-true", max_steps=2, limit_val_batches=1)
    trainer.fit(module, data)
    assert all(math.isfinite(float(v)) for v in trainer.callback_metrics.values())
    trainer.save_checkpoint(tmp_path / "bf16.ckpt")
    restored = NeuroFMxModule.load_from_checkpoint(tmp_path / "bf16.ckpt").eval()
    weights = dict(module.named_parameters())
    for name, p in restored.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, weights[name].float()), name
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        a = module.eval()({k: v.bfloat16() if torch.is_tensor(v) and v.is_floating_point() else v
                           for k, v in batch.items()})
        b = restored(batch)
    assert a["latents"]["ssm"].dtype == torch.bfloat16 and b["latents"]["ssm"].dtype == torch.float32
    ssm_a, ssm_b = a["latents"]["ssm"].float(), b["latents"]["ssm"]
    assert float((ssm_a - ssm_b).norm() / ssm_b.norm()) < 2e-2
    assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-3)


@pytest.mark.slow
def test_compiled_mamba_stack_equals_eager_without_breaks_or_recompiles():
    # aot_eager: inductor's C++ build takes ~100 s on a 2-core CI runner (measured: compiled == eager to 1.3e-7).
    import torch._dynamo as dynamo

    from models.backbones.mamba2 import Mamba2Stack

    torch.manual_seed(0)
    stack = Mamba2Stack(d_model=16, n_layers=2, d_state=8, headdim=8, chunk_size=16, kernels="portable",
                        fractional={"n_taps": 64, "min_alpha": 0.2, "max_alpha": 0.9})
    x = torch.randn(2, 48, 16)
    stack(x)  # the first eager call logs the SSD path once, as training does before any compiled step
    dynamo.reset()
    explained = dynamo.explain(stack)(x)
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    dynamo.reset()
    compiled = torch.compile(stack, backend="aot_eager")
    frames = None
    for seed in range(3):
        x = torch.randn(2, 48, 16, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        torch.testing.assert_close(compiled(x), stack(x), rtol=1e-5, atol=1e-6)
        count = dynamo.utils.counters["stats"]["unique_graphs"]
        assert frames is None or count == frames, "recompiled for the same shapes"
        frames = count


@pytest.mark.parametrize("precision,words", [(32.0, "is not a Lightning precision"), (16.0, "is not a Lightning precision"),
                                             ("16-true", "trains float16 weights")])
def test_sweep_trainer_precision_is_checked_before_any_trial(precision, words):
    # 32.0 passed (32.0 == 32) and every trial failed in pl.Trainer with "No precision set"; 16-true failed in each
    # trial's configure_optimizers instead of at validate
    from fmx.config import trainer_options

    with pytest.raises(ValueError) as err:
        trainer_options({"precision": precision})
    assert str(err.value).startswith("trainer.precision:") and words in str(err.value)


def test_the_precisions_offered_in_the_error_are_accepted():
    from fmx.config import trainer_options

    with pytest.raises(ValueError) as err:
        trainer_options({"precision": 32.0})
    offered = str(err.value).split("allowed: ", 1)[1].split(", ")
    assert "16-true" not in offered and "bf16-mixed" in offered
    for precision in offered:
        trainer_options({"precision": precision})
