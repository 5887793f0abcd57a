"""Review round 9: the fractal callbacks as a user meets them in a real Lightning fit, and fitting a preset to data."""
from __future__ import annotations

import csv
import re
from collections import Counter

import pytest
import torch

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger

from configs import tiny_training_config
from fractals.probes import latent_fd_probe
from models.callbacks import LatentFingerprintCallback, LatentHistogramCallback, latent_measures
from models.data.datamodule import build_datamodule
from models.fit_to_data import fit_model_config
from models.lightning import build_lightning_module


@pytest.mark.parametrize("cls, field", [(LatentFingerprintCallback, "fingerprint_every_n_steps"),
                                        (LatentHistogramCallback, "tb_hist_every_n")])
@pytest.mark.parametrize("every", [2.5, "abc", True, 0])
def test_callback_every_n_steps_refuses_fractions_text_and_bools_naming_the_field(cls, field, every):
    # 2.5 silently ran as every 2 steps and text failed as "'<' not supported between 'str' and 'int'".
    with pytest.raises(ValueError, match=rf"fractals\.log\.{field}.*{every!r}"):
        cls(every_n_steps=every, cfg_fractals={})
    assert cls(every_n_steps=3.0, cfg_fractals={}).every_n_steps == 3  # whole floats and numeric text, as in
    assert cls(every_n_steps="5", cfg_fractals={}).every_n_steps == 5  # the config path (build_callbacks)


def test_fit_keeps_the_default_vocabulary_of_a_configured_tokenizer_that_leaves_it_unset():
    cfg = tiny_training_config()
    cfg["model"]["tokenizers"]["eeg"] = {"layout": "time_mix"}  # n_channels unset: 256 channel ids
    fitted, changes = fit_model_config(cfg, {"modalities": ["eeg"], "n_channel_ids": 19})
    assert fitted["model"]["tokenizers"]["eeg"] == {"layout": "time_mix"}  # was cut to n_channels: 19
    assert not any("tokenizers.eeg" in c for c in changes)
    fitted, changes = fit_model_config(cfg, {"modalities": ["eeg"], "n_channel_ids": 300})
    assert fitted["model"]["tokenizers"]["eeg"]["n_channels"] == 300  # past the default it still grows
    assert any("eeg.n_channels: unset -> 300" in c for c in changes)


def test_callbacks_log_each_step_once_under_accumulation_and_match_direct_probe_calls(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_training_config(n_train=8, n_val=4, batch_size=2)
    cfg["fractals"]["log"].update(fingerprint_every_n_steps=1, tb_hist_every_n=1)

    class KeepBatch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batch = batch

    torch.manual_seed(0)
    module, keep = build_lightning_module(cfg), KeepBatch()
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path, name="r"),
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1, num_sanity_val_steps=0, limit_val_batches=0,
                         accumulate_grad_batches=2, callbacks=[keep])
    trainer.fit(module, datamodule=build_datamodule(cfg))
    rows = list(csv.DictReader(open(trainer.logger.experiment.metrics_file_path)))
    seen = Counter((k, r["step"]) for r in rows for k, v in r.items() if v and k.split("/")[0] in ("fingerprint", "hist"))
    assert set(seen.values()) == {1} and {step for _, step in seen} == {"0", "1", "2"}  # steps of train/loss
    last = {k: float(v) for r in rows if r["step"] == "2" for k, v in r.items() if v and k.startswith(("fing", "hist"))}
    module.eval()
    with torch.no_grad():
        latents = module.clean_latents(keep.batch, module(keep.batch))
    fs = module.latent_rate(keep.batch)
    probe = latent_fd_probe({k: latents[k] for k in ("perceiver", "ssm")}, cfg["fractals"], fs=fs)
    assert {f"fingerprint/{k}" for k in probe} == {k for k in last if k.startswith("fingerprint/")}
    for key, value in probe.items():
        assert last[f"fingerprint/{key}"] == pytest.approx(float(value), rel=1e-5, abs=1e-6), key
    for name, v in latent_measures(latents["ssm"], fs=fs, cfg_fractals=cfg["fractals"]).items():
        assert last[f"hist/latent_{name}_p50"] == pytest.approx(float(torch.quantile(v.flatten().float(), 0.5)), rel=1e-5, abs=1e-6)


def test_latent_measures_names_non_finite_latents_instead_of_calling_them_constant(caplog):
    from models import callbacks

    callbacks._WARNED.difference_update({"dead", "non-finite"})
    torch.manual_seed(0)
    x = torch.randn(2, 64, 4).cumsum(1)
    with caplog.at_level("WARNING", logger="models.callbacks"):
        assert latent_measures(torch.full_like(x, float("nan")), fs=62.5, cfg_fractals={}) == {}
    # A diverged model's latents were reported as "every latent channel is constant".
    assert "NaN or inf" in caplog.text and "constant" not in caplog.text
    x[:, 5, 1] = float("inf")
    out = latent_measures(x, fs=62.5, cfg_fractals={})
    assert {v.shape[1] for v in out.values()} == {3}  # the inf channel is left out, the others measured


@pytest.mark.parametrize("path, value", [(("log",), "often"), (("probes",), True),
                                         (("probes", "causal_scale_ablation"), True)])
def test_build_callbacks_names_an_option_block_that_is_not_a_mapping(path, value):
    from models.callbacks import build_callbacks

    cfg = tiny_training_config()
    parent = cfg["fractals"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    # Was AttributeError "'str' object has no attribute 'get'" at the start of the fit.
    with pytest.raises(ValueError, match=rf"fractals\.{'.'.join(path)}: needs a mapping.*{value!r}"):
        build_callbacks(cfg)
    parent[path[-1]] = None  # null means defaults
    assert len(build_callbacks(cfg)) == (3 if path == ("log",) else 2)  # the default config ablates


@pytest.mark.parametrize("path", [("probes",), ("probes", "causal_scale_ablation")])
def test_the_lightning_module_names_a_probes_block_that_is_not_a_mapping(path):
    # Was: fractals.probes (or its causal_scale_ablation) set to true raised AttributeError in the module's
    # constructor, before build_callbacks could name the field.
    from fmx.config import compose
    from models.lightning import build_lightning_module

    cfg = compose(["model=tiny", "data=synthetic"])
    node = cfg["fractals"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = True
    with pytest.raises(ValueError, match=re.escape("fractals." + ".".join(path)) + ": needs a mapping of options"):
        build_lightning_module(cfg)
