"""Review of LoRA fine-tuning as a user meets it: a fine-tuned checkpoint reloads (same outputs) once its
pretraining file is gone, and a Ray checkpoint folder or a non-checkpoint file given as model.init_from is named
as such."""
from __future__ import annotations

import pytest
import torch

import pytorch_lightning as pl

from models.adapters import LoRALinear
from models.data.datamodule import build_datamodule
from models.lightning import NeuroFMxModule, build_lightning_module

from configs import tiny_training_config


def _fine_tune_cfg(init_from) -> dict:
    cfg = tiny_training_config()
    cfg["model"]["adapters"]["kind"] = "lora"
    cfg["model"]["init_from"] = str(init_from)
    cfg["optim"].update(lr=1e-2, warmup_steps=0, schedule="constant")
    return cfg


def test_a_fine_tuned_checkpoint_reloads_with_its_outputs_after_the_init_from_file_is_gone(tmp_path):
    torch.manual_seed(0)
    pretrained = tmp_path / "pretrain" / "model.ckpt"
    pretrained.parent.mkdir()
    torch.save({"state_dict": build_lightning_module(tiny_training_config()).state_dict()}, pretrained)
    cfg = _fine_tune_cfg(pretrained)
    module = build_lightning_module(cfg)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    tuned = tmp_path / "tuned.ckpt"
    trainer.save_checkpoint(tuned)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in module.model.named_parameters()
               if n.endswith(".lora_B"))  # the adapters moved, so equal outputs below need them restored
    pretrained.unlink()  # a cleaned-up pretraining run, or a node-local s3 cache on another machine

    restored = NeuroFMxModule.load_from_checkpoint(tuned).eval()
    assert isinstance(restored.model.backbone.layers[0].mixer.out_proj, LoRALinear)
    assert restored.hparams["cfg"]["model"]["init_from"] == str(pretrained)  # provenance kept
    dm = build_datamodule(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        expected = module.eval().model(batch)["latents"]["ssm"]
        torch.testing.assert_close(restored.model(batch)["latents"]["ssm"], expected, rtol=0, atol=0)
    # only reloading skips init_from: a fresh build from the same config still needs the file
    with pytest.raises(ValueError, match=r"model\.init_from: no file at"):
        build_lightning_module(cfg)


def test_init_from_a_ray_checkpoint_folder_names_the_file_inside(tmp_path):
    folder = tmp_path / "checkpoint_000009"
    folder.mkdir()
    torch.save({"state_dict": build_lightning_module(tiny_training_config()).state_dict()}, folder / "model.ckpt")
    with pytest.raises(ValueError, match=r"model\.init_from: '.*checkpoint_000009' is a folder; give the checkpoint "
                                         r"file in it, e\.g\. '.*checkpoint_000009/model\.ckpt'"):
        build_lightning_module(_fine_tune_cfg(folder))


def test_init_from_a_file_that_is_no_checkpoint_says_so_without_torch_mmap_advice(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    with pytest.raises(ValueError) as info:
        build_lightning_module(_fine_tune_cfg(notes))
    message = str(info.value)
    assert message.startswith(f"model.init_from: {str(notes)!r} cannot be read as a torch checkpoint")
    assert "trainer.save_checkpoint" in message and "mmap" not in message


def test_weights_left_fresh_by_init_from_skip_and_frozen_by_lora_are_warned_about(tmp_path, caplog):
    pretrained = tmp_path / "model.ckpt"
    torch.save({"state_dict": build_lightning_module(tiny_training_config()).state_dict()}, pretrained)
    cfg = _fine_tune_cfg(pretrained)
    cfg["model"]["tokenizers"]["lfp"]["n_channels"] = 24  # a new subject with more LFP channels
    cfg["model"]["init_from_skip"] = ["*.lfp.*channel_*"]
    with caplog.at_level("WARNING", logger="models.adapters"):
        module = build_lightning_module(cfg)  # default train_also: loss_weighting.* only
    table = "tokenizer.tokenizers.lfp.embed.channel_embedding.weight"
    assert not module.model.get_parameter(table).requires_grad
    warned = [r.getMessage() for r in caplog.records if r.name == "models.adapters"]
    assert len(warned) == 1 and table in warned[0] and "model.adapters.train_also" in warned[0], warned
    caplog.clear()
    cfg["model"]["adapters"]["train_also"] = ["loss_weighting.*", "*.lfp.*channel_*"]  # the fix it names
    with caplog.at_level("WARNING", logger="models.adapters"):
        module = build_lightning_module(cfg)
    assert module.model.get_parameter(table).requires_grad
    assert not [r for r in caplog.records if r.name == "models.adapters"]
