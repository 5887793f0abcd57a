"""The byte-level fractal Mamba model: tokenizer, seeded architecture, overfitting, generation."""
import math

import pytest
import pytorch_lightning as pl
import torch

from models.byte.model import FractalByteLM, FractalModule, generate
from models.byte.tokenizer import BOS, decode, encode
from models.registry import build_datamodule, build_lightning_module

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


def test_tokenizer_round_trip_and_specials():
    ids = encode("héllo", add_bos=True, add_eos=True)
    assert ids[0] == BOS and decode(ids) == "héllo".encode()


def test_architecture_is_drawn_from_ranges_and_seeded():
    a = FractalByteLM(d_model=32, n_layers=3, n_fractals=4, depth_range=(1, 3), dim_range=(8, 40), seed=7)
    b = FractalByteLM(d_model=32, n_layers=3, n_fractals=4, depth_range=(1, 3), dim_range=(8, 40), seed=7)
    assert a.architecture == b.architecture
    flat = [x for layer in a.architecture for x in layer]
    assert all(1 <= d <= 3 and 8 <= h <= 40 for d, h in flat) and len(flat) == 12
    with pytest.raises(ValueError, match="depth_range"):
        FractalByteLM(depth_range=(3, 1))


def test_fractal_module_has_2_pow_d_minus_1_mlps_and_drops_paths():
    m = FractalModule(d_model=8, depth=3, hidden=4, drop_path=0.5)
    n_mlps = sum(1 for mod in m.modules() if isinstance(mod, torch.nn.Sequential))
    assert n_mlps == 2**3 - 1
    x = torch.randn(2, 5, 8)
    m.eval()
    torch.testing.assert_close(m(x), m(x))  # no dropping in eval


def test_causal_logits_ignore_future_bytes():
    model = FractalByteLM(d_model=32, n_layers=2, dim_range=(16, 32)).eval()
    ids = torch.randint(0, 256, (1, 40))
    ids2 = ids.clone()
    ids2[0, 30:] = (ids2[0, 30:] + 1) % 256
    torch.testing.assert_close(model(ids)[:, :30], model(ids2)[:, :30])


def test_overfits_a_small_text_and_generates_it(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    cfg = {
        "seed": 0,
        "model": {"family": "fractal_byte", "d_model": 32, "n_layers": 1, "n_fractals": 2, "depth_range": [1, 2],
                  "dim_range": [64, 64], "lr": 0.02, "drop_path": 0.0,
                  "mamba": {"d_state": 16, "headdim": 16, "chunk_size": 32}},
        "data": {"name": "bytes", "path": str(tmp_path), "seq_len": 32, "batch_size": 16, "windows_per_epoch": 64},
    }
    module, data = build_lightning_module(cfg), build_datamodule(cfg)
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, data)
    bpb = float(trainer.callback_metrics["val/bpb"])
    assert bpb < 1.0, f"bits per byte {bpb:.2f} (uniform is {math.log2(256):.0f})"
    out = decode(generate(module.model, encode("the quick "), max_new=10))
    assert out.startswith(b"the quick brown"), out


def test_missing_data_path_is_a_clear_error():
    with pytest.raises(ValueError, match="data.path"):
        build_datamodule({"data": {"name": "bytes"}})


def test_fmx_infer_generates_from_a_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from fmx.cli import app
    from models.byte.lightning import FractalByteModule

    module = FractalByteModule(model={"d_model": 32, "n_layers": 1, "dim_range": (16, 16), "mamba": {"headdim": 16}})
    trainer = pl.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "byte.ckpt"
    trainer.save_checkpoint(ckpt)
    result = CliRunner().invoke(app, ["infer", str(ckpt), "--prompt", "ab", "--max-bytes", "5", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b"ab") and len(result.stdout_bytes.rstrip(b"\n")) >= 2
    bad = CliRunner().invoke(app, ["infer", str(tmp_path / "missing.ckpt")])
    assert bad.exit_code != 0
