"""Step-speed review: the faster code paths compute what the old ones did, with fewer host syncs.

Correctness only; the timings are in the review report and ``benchmarks/model.py``, never here.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from models.lightning import NeuroFMxModule
from models.neurofmx import NeuroFMx
from models.tokenizers import MultimodalTokenizer
from models.tokenizers.base import ChannelPatchTokenizer, patchify, sinusoidal_encoding, value_range

from configs import tiny_training_config


class _HostReads:
    """Count tensor -> Python reads (each one a device sync on CUDA) inside the ``with`` block."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")

    def __enter__(self):
        self.count, self._orig = 0, {}
        for name in self.NAMES:
            orig = self._orig[name] = getattr(torch.Tensor, name)

            def counted(t, *a, _orig=orig, **k):
                self.count += 1
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc):
        for name, orig in self._orig.items():
            setattr(torch.Tensor, name, orig)


def _old_time_mix(m: ChannelPatchTokenizer, x, mask, ids):
    """The time_mix forward as it was (einsum pooling), with normalize='none'."""
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype))
    patches = patchify(x, m.patch_size)
    tok = m.value_proj(patches) + m.channel_embedding(torch.where(mask, ids, 0)).unsqueeze(2)
    w = mask.to(tok.dtype)
    count = w.sum(1)
    pooled = torch.einsum("bcnd,bc->bnd", nn.functional.gelu(tok), w) / count.clamp_min(1.0)[:, None, None]
    tok = m.mix_out(pooled)
    return tok + m.mlp(tok) + sinusoidal_encoding(torch.arange(patches.shape[2]), m.d_model).to(tok.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_time_mix_pooling_equals_the_einsum_it_replaced(dtype, batch):
    torch.manual_seed(0)
    m = ChannelPatchTokenizer(d_model=16, patch_size=4, n_channel_ids=12, layout="time_mix", normalize="none").to(dtype)
    x = torch.randn(batch, 5, 30, dtype=dtype)  # T not a multiple of the patch: padded last patch
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False  # padded channels
    if batch > 1:
        mask[1] = False  # a sample without any real channel: its count is 0
    ids = torch.randint(0, 12, (batch, 5))
    new = m(x, mask=mask, ids=ids).tokens
    grads_new = torch.autograd.grad(new.square().sum(), [m.value_proj.weight, m.channel_embedding.weight])
    old = _old_time_mix(m, x, mask, ids)
    grads_old = torch.autograd.grad(old.square().sum(), [m.value_proj.weight, m.channel_embedding.weight])
    torch.testing.assert_close(new, old, rtol=1e-6, atol=1e-6)
    for g_new, g_old in zip(grads_new, grads_old):
        torch.testing.assert_close(g_new, g_old, rtol=1e-6, atol=1e-6)


def test_value_range_reads_min_and_max_in_one_host_read():
    t = torch.tensor([[4, -2, 9], [0, 7, 3]])
    with _HostReads() as reads:
        lo, hi = value_range(t)
    assert (lo, hi) == (-2, 9) and type(lo) is int and type(hi) is int
    assert reads.count == 1


def test_multimodal_offsets_with_one_host_read_for_all_modalities():
    torch.manual_seed(0)
    tok = MultimodalTokenizer(d_model=16, patch_size=4, modalities={
        "spikes": {"n_units": 8, "layout": "channel_patch"},
        "lfp": {"n_channels": 4, "layout": "time_mix"},
        "eeg": {"n_channels": 6, "layout": "channel_patch"}})
    batch = {"spikes": torch.poisson(torch.ones(2, 16, 5)), "lfp": torch.randn(2, 3, 16), "eeg": torch.randn(2, 6, 16)}
    out = tok(batch)
    chan, mod = out.channel_index, out.modality_index
    assert chan[mod == 0].unique().tolist() == list(range(5))  # 5 units
    assert chan[mod == 1].unique().tolist() == [-1]  # channel-mixing tokens keep -1
    assert chan[mod == 2].unique().tolist() == list(range(5, 11))  # eeg after the 5 units; lfp adds none
    # Reads left: the id range check of each tokenizer with channel ids (3) and the offsets (1, was 3).
    with _HostReads() as reads:
        tok(batch)
    assert reads.count == 3 + 1


def test_popt_reads_the_channel_count_once():
    torch.manual_seed(0)
    model = NeuroFMx(d_model=16, patch_size=4, tokenizers={"lfp": {"n_channels": 4, "layout": "channel_patch"}},
                     perceiver={"n_heads": 2}, ssm={"headdim": 16, "d_state": 8, "chunk_size": 8},
                     popt={"n_heads": 2}, heads={"forecast": {"keys": ["lfp"]}})
    batch = {"lfp": torch.randn(2, 4, 32)}
    with torch.no_grad():
        enc = model.encode(batch)
        steps = enc["ssm"]
        with _HostReads() as reads:
            pooled = model._popt(enc["tokens"], steps)
        from models.popt import channel_summaries

        summ, smask = channel_summaries(enc["tokens"])  # counts the channels itself
        expect = model.popt(torch.cat([summ, steps], 1),
                            mask=torch.cat([smask, torch.ones(steps.shape[:2], dtype=torch.bool)], 1))
    assert reads.count == 1  # was two: any(channel >= 0), then max(channel)
    torch.testing.assert_close(pooled, expect, rtol=0, atol=0)


def _optimizer(module):
    return module.configure_optimizers()["optimizer"]


def test_adamw_is_fused_on_cpu_in_full_precision_and_matches_the_default():
    torch.manual_seed(0)
    module = NeuroFMxModule(tiny_training_config())
    fused = _optimizer(module)
    assert fused.defaults["fused"] is True
    params = [p for g in fused.param_groups for p in g["params"]]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    reference = torch.optim.AdamW([{**{k: v for k, v in g.items() if k not in ("params", "fused")},
                                    "params": twins[sum(len(h["params"]) for h in fused.param_groups[:i]):][:len(g["params"])]}
                                   for i, g in enumerate(fused.param_groups)])
    assert reference.defaults["fused"] is None
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        fused.step()
        reference.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_adamw_is_not_fused_under_mixed_precision(precision):
    # Lightning refuses gradient clipping with optimizers that unscale gradients themselves (fused ones).
    module = NeuroFMxModule(tiny_training_config())
    module._trainer = SimpleNamespace(precision=precision, estimated_stepping_batches=100)
    try:
        assert _optimizer(module).defaults["fused"] is None
    finally:
        module._trainer = None


def test_fused_adamw_trains_with_gradient_clipping_under_lightning():
    import pytorch_lightning as pl

    from models.data.datamodule import build_datamodule

    cfg = tiny_training_config(n_train=8, batch_size=4)
    cfg["optim"] = dict(cfg["optim"], grad_clip=0.5)
    pl.seed_everything(0, verbose=False)
    module = NeuroFMxModule(cfg)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    module.configure_callbacks = lambda: []
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 2 and trainer.optimizers[0].defaults["fused"] is True
    assert torch.isfinite(trainer.callback_metrics["train/loss"])

