"""LoRA fine-tuning: the wrapped layer starts equal to its base, only adapters (and train_also) learn, merging
keeps the outputs, small stays under 1 % trainable, and a pretrain -> init_from + adapters run trains only them."""
from __future__ import annotations

import copy
import fnmatch
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import pytorch_lightning as pl

from models.adapters import LoRALinear, add_lora, configure_finetuning, merge_lora, trainable_fraction
from models.data.datamodule import build_datamodule
from models.lightning import NeuroFMxModule, build_lightning_module
from models.neurofmx import NeuroFMx

from configs import tiny_training_config

TARGETS = ["perceiver.*.attn.*", "popt.*.attn.*", "backbone.layers.*.mixer.out_proj"]


def _lora_cfg(**adapters) -> dict:
    cfg = tiny_training_config()
    cfg["model"]["adapters"].update({"kind": "lora", **adapters})
    return cfg


def _batch(cfg: dict) -> dict:
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_lora_linear_equals_its_base_at_init():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    x = torch.randn(3, 5, 12)
    expected = base(x)
    lora = LoRALinear(base=base, rank=4, alpha=8.0, dropout=0.1).eval()
    assert torch.equal(lora(x), expected)
    assert lora.lora_A.abs().sum() > 0 and torch.equal(lora.lora_B, torch.zeros(7, 4))
    assert not base.weight.requires_grad and not base.bias.requires_grad


def test_merge_gives_the_unmerged_output_in_float64():
    torch.manual_seed(1)
    base = nn.Linear(10, 6).double()
    lora = LoRALinear(base=base, rank=3, alpha=5.0)
    with torch.no_grad():
        lora.lora_B.normal_()  # a trained update: B = 0 would make the check trivial
    x = torch.randn(4, 10, dtype=torch.float64)
    merged = lora.merge()
    assert isinstance(merged, nn.Linear) and not isinstance(merged, LoRALinear)
    assert not torch.allclose(lora(x), base(x))
    torch.testing.assert_close(merged(x), lora(x), rtol=1e-12, atol=1e-12)


def test_merge_lora_keeps_the_model_output():
    torch.manual_seed(2)
    cfg = tiny_training_config()
    model = NeuroFMx.from_config(cfg).double().eval()
    add_lora(model, targets=TARGETS, rank=4, alpha=8.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".lora_B"):
                p.normal_(std=0.1)
    batch = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in _batch(cfg).items()}
    with torch.no_grad():
        before = model(batch)["latents"]["ssm"]
        names = merge_lora(model)
        after = model(batch)["latents"]["ssm"]
    assert names and not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)


def test_gradients_reach_only_the_adapters_and_train_also():
    torch.manual_seed(3)
    cfg = tiny_training_config()
    model = NeuroFMx.from_config(cfg)
    wrapped = add_lora(model, targets=TARGETS, rank=4, alpha=8.0, train_also=["behavior.*"])
    assert "backbone.layers.1.mixer.out_proj" in wrapped and "perceiver.cross.attn.kv" in wrapped
    model(_batch(cfg))["loss"].backward()
    with_grad = set()
    for name, p in model.named_parameters():
        trainable = name.endswith((".lora_A", ".lora_B")) or name.startswith("behavior.")
        assert p.requires_grad == trainable, name
        assert trainable or p.grad is None, name
        if p.grad is not None:
            with_grad.add(name)
    # popt.set_blocks only run on channel tokens (tiny's time_mix layout has none), so not every adapter gets one
    assert {"behavior.net.weight", "perceiver.cross.attn.q.lora_B", "backbone.layers.1.mixer.out_proj.lora_A"} <= with_grad
    # B starts at 0, so A's first gradient is 0; B's is not
    assert model.backbone.layers[0].mixer.out_proj.lora_B.grad.abs().sum() > 0


def test_small_preset_trains_under_one_percent_with_the_default_targets():
    from fmx.config import compose

    cfg = compose(["model=small", "model.adapters.kind=lora"])
    assert cfg["model"]["adapters"]["rank"] == 8 and cfg["model"]["adapters"]["targets"] == TARGETS
    with torch.device("meta"):
        model = NeuroFMx.from_config(cfg)
        report = configure_finetuning(model, cfg["model"])
    fraction = trainable_fraction(model)
    assert len(report["wrapped"]) == 24  # (2 Perceiver + 2 PopT attention blocks) x q, kv, out + 12 out_proj
    assert 0 < fraction < 0.01, f"small, rank 8, default targets: {fraction:.4%} trainable"
    assert report["trainable"] / report["total"] == fraction


def test_every_neurofmx_preset_has_the_same_fine_tuning_block():
    from models.presets import PRESETS, load_preset

    blocks = [{k: load_preset(p)[k] for k in ("init_from", "init_from_skip", "adapters")} for p in PRESETS]
    assert all(b == blocks[0] for b in blocks), blocks
    assert blocks[0]["adapters"]["kind"] == "none" and blocks[0]["init_from"] is None


def _fit(module, cfg, steps: int) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=build_datamodule(cfg))
    return trainer


def test_pretrain_then_fine_tune_from_the_checkpoint_with_adapters(tmp_path):
    torch.manual_seed(0)
    pre_cfg = tiny_training_config()
    pretrain = build_lightning_module(pre_cfg)
    trainer = _fit(pretrain, pre_cfg, 3)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = {k[len("model."):]: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()
             if k.startswith("model.")}

    cfg = _lora_cfg(train_also=["loss_weighting.*", "behavior.*"])
    cfg["model"]["init_from"] = str(ckpt)
    cfg["optim"].update(lr=1e-2, warmup_steps=0, schedule="constant")
    cfg["fractals"]["enable"] = False  # the task loss alone, so "the loss fell" is about the adapters
    torch.manual_seed(1)  # a different fresh init: equality below comes from the checkpoint
    module = build_lightning_module(cfg)
    # (a) every base weight (wrapped layers' under .base) equals the checkpoint's
    for name, value in module.model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):
            continue
        torch.testing.assert_close(value, saved[name.replace(".base.", ".")], rtol=0, atol=0, msg=name)
    # the optimiser gets exactly the trainable parameters
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in module.model.parameters() if p.requires_grad}
    assert len(in_opt) < len(list(module.model.parameters()))

    batch = _batch(cfg)
    module.model.eval()
    with torch.no_grad():
        loss_before = float(module.model(batch)["loss"])
    before = copy.deepcopy(module.model.state_dict())
    module.model.train()
    trainer = _fit(module, cfg, 12)
    module.model.eval()
    with torch.no_grad():
        loss_after = float(module.model(batch)["loss"])
    # (b) only adapters and train_also changed, and the training loss fell
    changed = {n for n, v in module.model.state_dict().items() if not torch.equal(v, before[n])}
    allowed = [n for n in before if n.endswith((".lora_A", ".lora_B"))
               or fnmatch.fnmatchcase(n, "loss_weighting.*") or fnmatch.fnmatchcase(n, "behavior.*")]
    assert changed and changed <= set(allowed), sorted(changed - set(allowed))
    assert any(n.endswith(".lora_B") for n in changed)
    assert loss_after < loss_before, (loss_before, loss_after)
    # the fine-tuned checkpoint rebuilds with its adapters (init_from is read again, then overwritten)
    tuned = tmp_path / "tuned.ckpt"
    trainer.save_checkpoint(tuned)
    restored = NeuroFMxModule.load_from_checkpoint(tuned)
    assert isinstance(restored.model.backbone.layers[0].mixer.out_proj, LoRALinear)
    for name, value in module.model.state_dict().items():
        torch.testing.assert_close(restored.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_the_fine_tuning_sweep_of_model_md_validates(tmp_path):
    import re

    from fmx.config import compose
    from fmx.schema import load_sweep
    from fmx.trial_build import check_trials_build

    doc = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    block = re.search(r"## Fine-tuning with adapters.*?```yaml\n(.*?)```", doc, re.S).group(1)
    path = tmp_path / "finetune_lora.yaml"
    path.write_text(block)
    sweep = load_sweep(path)
    assert sweep.base[2].startswith("model.init_from=/") and "model.adapters.kind=lora" in sweep.base
    assert set(sweep.parameters) == {"model.adapters.rank", "optim.lr"}
    # what `fmx sweep validate` runs: the trials' models built on meta. The checkpoint is not here: it may be on a
    # cluster's nodes, so validate leaves it to them (a local run refuses it: the next test).
    check_trials_build(sweep, file=path)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": build_lightning_module(compose(["model=tiny"])).state_dict()}, ckpt)
    tiny = re.sub(r"model\.init_from=\S+", f"model.init_from={ckpt}", block.replace("model=small", "model=tiny"))
    path.write_text(tiny)
    check_trials_build(load_sweep(path), file=path)  # every corner (rank 4 and 16, both lr ends) builds


def test_init_from_skip_leaves_a_resized_vocabulary_fresh_and_strict_load_names_the_mismatch(tmp_path):
    cfg = tiny_training_config()
    torch.manual_seed(0)
    old = build_lightning_module(cfg)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": old.state_dict()}, ckpt)
    new_cfg = tiny_training_config()
    new_cfg["model"]["tokenizers"]["lfp"]["n_channels"] = 24  # a new subject with more channels
    new_cfg["model"]["init_from"] = str(ckpt)
    with pytest.raises(ValueError, match=r"model\.init_from: .*shape mismatches: "
                                         r"tokenizer\.tokenizers\.lfp\.embed\.channel_embedding\.weight .*init_from_skip"):
        build_lightning_module(new_cfg)
    # the channel-id tables of the tokenizer and the forecast readout both grow with the channel count
    new_cfg["model"]["init_from_skip"] = ["tokenizer.tokenizers.lfp.embed.channel_embedding.*",
                                          "forecast.lfp.readout.channel_*"]
    module = build_lightning_module(new_cfg)
    assert module.finetune["skipped"] == ["forecast.lfp.readout.channel_bias.weight",
                                          "forecast.lfp.readout.channel_embedding.weight",
                                          "tokenizer.tokenizers.lfp.embed.channel_embedding.weight"]
    torch.testing.assert_close(module.model.backbone.layers[0].mixer.in_proj.weight,
                               old.model.backbone.layers[0].mixer.in_proj.weight, rtol=0, atol=0)


@pytest.mark.parametrize("change, match", [
    ({"rank": 0}, r"model\.adapters\.rank: needs an integer >= 1 .*got 0"),
    ({"rank": 2.5}, r"model\.adapters\.rank: needs an integer >= 1 .*got 2\.5"),
    ({"alpha": 0}, r"model\.adapters\.alpha: needs a finite number > 0 .*got 0"),
    ({"dropout": 1.0}, r"model\.adapters\.dropout: needs a number in \[0, 1\).*got 1\.0"),
    ({"kind": "qlora"}, r"model\.adapters\.kind: needs 'none' or 'lora', got 'qlora'"),
    ({"ranks": 4}, r"model\.adapters: unknown key\(s\) \['ranks'\]; allowed"),
    ({"targets": ["encoder.*.q_proj"]}, r"model\.adapters\.targets: 'encoder\.\*\.q_proj' matches no nn\.Linear "
                                        r"of the model; some that exist: tokenizer\.tokenizers\.lfp"),
    ({"targets": "backbone.*"}, r"model\.adapters\.targets: needs a list of name patterns"),
    ({"train_also": ["head.*"]}, r"model\.adapters\.train_also: 'head\.\*' matches no parameter; .*'behavior'"),
])
def test_bad_adapter_config_names_the_path_and_value(change, match):
    cfg = _lora_cfg(**change)
    with pytest.raises(ValueError, match=match):
        build_lightning_module(cfg)


@pytest.mark.parametrize("change, match", [
    ({"init_from": "/nonexistent/model.ckpt"}, r"model\.init_from: no file at '/nonexistent/model\.ckpt'"),
    ({"init_from": 3}, r"model\.init_from: needs the path of a Lightning checkpoint .*got 3"),
    ({"init_from": "runs/model.ckpt"}, r"model\.init_from: needs an absolute path .*got 'runs/model\.ckpt'"),
    ({"init_from_skip": ["tokenizer.*"]}, r"model\.init_from_skip: set to \['tokenizer\.\*'\] but model\.init_from "
                                          r"is null"),
])
def test_bad_init_from_names_the_path_and_value(change, match):
    cfg = tiny_training_config()
    cfg["model"].update(change)
    with pytest.raises(ValueError, match=match):
        build_lightning_module(cfg)


def test_a_lora_checkpoint_as_init_from_is_refused_and_the_merge_recipe_works(tmp_path):
    torch.manual_seed(0)
    tuned = build_lightning_module(_lora_cfg())
    with torch.no_grad():
        tuned.model.backbone.layers[0].mixer.out_proj.lora_B.fill_(0.01)
    lora_ckpt, merged_ckpt = tmp_path / "lora.ckpt", tmp_path / "merged.ckpt"
    torch.save({"state_dict": tuned.state_dict()}, lora_ckpt)
    cfg = tiny_training_config()
    cfg["model"]["init_from"] = str(lora_ckpt)
    with pytest.raises(ValueError, match=r"model\.init_from: .*holds LoRA adapters; fold them in first"):
        build_lightning_module(cfg)
    merge_lora(tuned.model)  # the recipe the message gives
    torch.save({"state_dict": tuned.state_dict()}, merged_ckpt)
    cfg["model"]["init_from"] = str(merged_ckpt)
    module = build_lightning_module(cfg)
    assert module.finetune["init_from"] == str(merged_ckpt)
    torch.testing.assert_close(module.model.backbone.layers[0].mixer.out_proj.weight,
                               tuned.model.backbone.layers[0].mixer.out_proj.weight, rtol=0, atol=0)


def test_lora_twice_on_a_layer_is_refused():
    model = NeuroFMx.from_config(tiny_training_config())
    add_lora(model, targets=["backbone.layers.*.mixer.out_proj"], rank=2, alpha=4.0)
    with pytest.raises(ValueError, match=r"targets: 'backbone\.layers\.\*\.mixer\.out_proj' matches "
                                         r"backbone\.layers\.0\.mixer\.out_proj.*already carry LoRA"):
        add_lora(model, targets=["backbone.layers.*.mixer.out_proj"], rank=2, alpha=4.0)


def test_platform_config_builds_a_lora_module():
    from fmx.config import compose
    from models.registry import build_lightning_module as registry_build

    cfg = compose(["model=tiny", "data=synthetic", "model.adapters.kind=lora", "model.adapters.rank=4",
                   "model.adapters.train_also=[behavior.*]"])
    module = registry_build(cfg)
    assert isinstance(module.model.popt.pool.attn.q, LoRALinear) and module.model.popt.pool.attn.q.rank == 4
    assert module.model.behavior.net.weight.requires_grad and not module.model.tokenizer.modality_embedding.weight.requires_grad
    with pytest.raises(ValueError, match=r"model\.adapters\.rank: needs an integer >= 1"):
        registry_build(compose(["model=tiny", "model.adapters.rank=-1"]))


def test_a_local_sweep_refuses_a_missing_init_from_before_ray_starts(tmp_path, monkeypatch):
    import re

    from typer.testing import CliRunner

    from fmx.cli import app

    doc = (Path(__file__).resolve().parents[1] / "docs" / "model.md").read_text()
    block = re.search(r"## Fine-tuning with adapters.*?```yaml\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "finetune.yaml").write_text(block.replace("model=small", "model=tiny"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sweep", "run", "finetune.yaml"])
    assert result.exit_code == 2
    assert re.search(r"base\[2\]: model\.init_from: /mnt/shared/\S+ does not exist on this machine", result.output)


def test_a_relative_init_from_is_made_absolute_against_the_submit_folder(tmp_path):
    from fmx.config import absolute_data_paths

    assert absolute_data_paths(["model=tiny", "model.init_from=runs/pre/model.ckpt"], tmp_path) == [
        "model=tiny", f"model.init_from={(tmp_path / 'runs/pre/model.ckpt').resolve()}"]
