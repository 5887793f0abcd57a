"""The fractal measures of a model with a masked-reconstruction head read unmasked latents: the head hides
a quarter of the steps from the encoder in eval too (a fixed pattern), and hidden steps carry no input, so
val/latent_* and the logged fingerprints used to describe partly blanked latents."""
from __future__ import annotations

import torch

from configs import tiny_training_config
from models.callbacks import _forward_latents
from models.data.batch import collate_batch
from models.data.datamodule import build_datamodule
from models.lightning import build_lightning_module, latent_measures


def _module_and_batch(reconstruction: bool):
    cfg = tiny_training_config()
    if reconstruction:
        cfg["model"]["heads"]["reconstruction"] = {"keys": ["lfp"], "mask_ratio": 0.5}
    torch.manual_seed(0)
    module = build_lightning_module(cfg).eval()
    data = build_datamodule(cfg)
    data.setup("fit")
    batch = collate_batch([data.val_set[i] for i in range(2)])
    return module, batch


def _val_latent_beta(module, batch) -> float:
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step(batch, 0)
    i = module._val_keys.index("val/latent_beta")
    sums, counts = module._val_totals
    return float(sums[i] / counts[i])


def test_val_latent_measures_read_the_unmasked_latents_of_a_reconstruction_model():
    module, batch = _module_and_batch(reconstruction=True)
    with torch.no_grad():
        masked = module(batch)["latents"]["ssm"]
        clean = module.model.encode(batch)["ssm"]
    assert not torch.allclose(masked, clean)  # the head really hides steps in eval
    want = float(latent_measures(clean, fs=module.latent_rate(batch), cfg_fractals=module.fractals_cfg)["beta"].mean())
    got_masked = float(latent_measures(masked, fs=module.latent_rate(batch),
                                       cfg_fractals=module.fractals_cfg)["beta"].mean())
    assert abs(want - got_masked) > 1e-4  # so the check below can tell the two apart
    assert abs(_val_latent_beta(module, batch) - want) < 1e-5


def test_callbacks_fingerprint_the_unmasked_latents_and_keep_the_masked_loss():
    module, batch = _module_and_batch(reconstruction=True)
    out = _forward_latents(module, batch)
    with torch.no_grad():
        clean = module.model.encode(batch)
        plain = module(batch)
    torch.testing.assert_close(out["latents"]["ssm"], clean["ssm"])
    torch.testing.assert_close(out["latents"]["perceiver"], clean["perceiver"])
    torch.testing.assert_close(out["loss"], plain["loss"])  # the loss still scores the hidden steps


def test_a_model_without_reconstruction_measures_its_forward_latents_without_a_second_encode():
    module, batch = _module_and_batch(reconstruction=False)
    with torch.no_grad():
        out = module(batch)
    assert module.clean_latents(batch, out) is out["latents"]
