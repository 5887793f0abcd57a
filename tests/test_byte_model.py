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


def test_val_bpb_counts_real_bytes_only_in_base_2():
    from models.byte.lightning import FractalByteModule
    from models.byte.tokenizer import EOS, PAD

    module = FractalByteModule(model={"d_model": 16, "n_layers": 1, "dim_range": (8, 8), "mamba": {"headdim": 16}})
    logits = torch.zeros(1, 4, 259)
    logits[0, 2, EOS] = 50.0  # the separator is predicted perfectly; the bytes are uniform over 259
    module.forward = lambda ids: logits
    logged = {}
    module.log_dict = lambda metrics, **kw: logged.update(metrics)
    y = torch.tensor([[ord("a"), 0x00, EOS, 0xFF]])
    module.validation_step((torch.zeros(1, 4, dtype=torch.long), y), 0)
    # three real bytes, each at probability 1/259: log2(259) bits per byte
    assert float(logged["val/bpb"]) == pytest.approx(math.log2(259), rel=1e-5)
    y_pad = torch.tensor([[ord("a"), 0x00, PAD, 0xFF]])
    logged.clear()
    module.validation_step((torch.zeros(1, 4, dtype=torch.long), y_pad), 0)
    assert float(logged["val/bpb"]) == pytest.approx(math.log2(259), rel=1e-5)


def test_tokenizer_round_trips_every_byte_value():
    raw = bytes(range(256)) + b"\x00\xff\x00"
    assert decode(encode(raw, add_bos=True, add_eos=True)) == raw
    assert decode(torch.tensor(encode(raw))) == raw


def _tiny_checkpoint(tmp_path):
    from models.byte.lightning import FractalByteModule

    module = FractalByteModule(model={"d_model": 16, "n_layers": 1, "dim_range": (8, 8), "mamba": {"headdim": 16}})
    ckpt = tmp_path / "byte.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)
    return ckpt


def test_fmx_infer_is_seeded_and_refuses_bad_sampling_options(tmp_path):
    from typer.testing import CliRunner

    from fmx.cli import app

    ckpt = _tiny_checkpoint(tmp_path)
    runner = CliRunner()
    run = lambda *a: runner.invoke(app, ["infer", str(ckpt), "-p", "ab", *a])  # noqa: E731
    first, again = run("-n", "12", "--seed", "3"), run("-n", "12", "--seed", "3")
    assert first.exit_code == 0, first.output
    assert first.stdout_bytes == again.stdout_bytes and len(first.stdout_bytes) == 2 + 12 + 1
    for bad in (["-n", "-3"], ["--top-k", "-1"], ["--temperature", "-1"], ["--temperature", "inf"]):
        out = run(*bad)
        assert out.exit_code == 2 and "Invalid value" in out.output, (bad, out.output, out.exception)


def test_null_data_batch_size_falls_back_to_the_trainer_batch_size(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x00\xff" * 8)
    dm = build_datamodule({"data": {"name": "bytes", "path": str(tmp_path), "batch_size": None},
                           "trainer": {"batch_size": 32}})
    assert dm.batch_size == 32


def test_non_utf8_prompt_bytes_from_the_command_line_round_trip(tmp_path):
    import os

    from typer.testing import CliRunner

    from fmx.cli import app

    # Linux hands argv bytes that are not UTF-8 to Python as lone surrogates (os.fsdecode).
    prompt = os.fsdecode(b"a\xff\xc3b")
    assert decode(encode(prompt)) == b"a\xff\xc3b"
    ckpt = _tiny_checkpoint(tmp_path)
    out = CliRunner().invoke(app, ["infer", str(ckpt), "-p", prompt, "-n", "2", "--temperature", "0"])
    assert out.exit_code == 0, (out.output, out.exception)
    assert out.stdout_bytes.startswith(b"a\xff\xc3b")


def test_fmx_infer_starts_an_empty_prompt_with_a_token_the_model_was_trained_on(tmp_path, monkeypatch):
    # Trained on files joined by EOS, the model has only ever seen a document start after EOS;
    # BOS never occurs in the training data, so its embedding is untrained.
    from typer.testing import CliRunner

    import models.byte.model as byte_model
    from fmx.cli import app
    from models.byte.data import read_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"\x00first")
    (corpus / "b.txt").write_bytes(b"second\xff")
    seen = {}
    monkeypatch.setattr(byte_model, "generate", lambda model, ids, **kw: seen.setdefault("ids", list(ids)))
    out = CliRunner().invoke(app, ["infer", str(_tiny_checkpoint(tmp_path)), "-n", "1"])
    assert out.exit_code == 0, (out.output, out.exception)
    assert len(seen["ids"]) == 1 and seen["ids"][0] in set(read_corpus(corpus).tolist())


def test_fmx_infer_refuses_a_file_that_is_not_a_byte_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from fmx.cli import app
    from models.criticality.two_moons import TwoMoonsModule

    other = TwoMoonsModule(width=8, depth=2)
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams),
                "pytorch-lightning_version": pl.__version__}, tmp_path / "two_moons.ckpt")
    (tmp_path / "notes.ckpt").write_text("hello")
    for name in ("two_moons.ckpt", "notes.ckpt"):
        out = CliRunner().invoke(app, ["infer", str(tmp_path / name), "-n", "1"])
        flat = "".join(ch for ch in out.output if ch.isalnum() or ch in "._")  # the error panel wraps lines
        assert out.exit_code == 2 and "notafractal_bytecheckpoint" in flat and name in flat, (out.output, out.exception)


class _FixedLogits(torch.nn.Module):
    """A stand-in LM whose next-token logits are the same at every step."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, ids):
        return self.logits.expand(ids.shape[0], ids.shape[1], -1)


def test_generate_stops_at_eos_and_never_samples_pad_or_bos():
    from models.byte.tokenizer import BOS, EOS, PAD, VOCAB_SIZE

    logits = torch.full((VOCAB_SIZE,), -5.0)
    logits[PAD] = logits[BOS] = 10.0  # the most likely ids, yet they never occur in data
    logits[EOS] = 1.0
    logits[ord("a")] = 0.5
    model = _FixedLogits(logits)
    assert generate(model, [ord("x")], max_new=5) == [ord("x"), EOS]
    assert generate(model, [ord("x")], max_new=5, stop_at_eos=False) == [ord("x")] + [ord("a")] * 5
    sampled = generate(model, [ord("x")], max_new=50, temperature=1.0, top_k=3, stop_at_eos=False,
                       generator=torch.Generator().manual_seed(0))
    assert set(sampled[1:]) <= set(range(256)) and len(sampled) == 51
