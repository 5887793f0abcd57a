"""The fractal fingerprint of a model's SSM latents on one validation batch (what rank 0 logs each evaluation)."""
from __future__ import annotations

from typing import Mapping

import torch


_MEASURE_NAMES = {"beta": "spectral_beta", "hfd": "higuchi_fd", "dfa": "dfa_alpha"}


@torch.no_grad()
def latent_fingerprint(pl_module, batch, *, max_channels: int = 32):
    """The fractal fingerprint of the SSM latents of one validation batch: ``(table, summary)``.

    ``table`` is tidy (``channel, measure, value, ok`` ...), ``summary`` holds ``{measure}_mean/_std`` and, with
    :func:`fractals.fingerprint.fingerprint`, the channel-network measures (``fc_density``, ``graph_fd``). Without
    that module the model's own per-channel measures (1/f beta, Higuchi FD, DFA alpha) are used.

    Shape:
        latents["ssm"]: (B, T, D) -> the first ``max_channels`` latent channels, batch items as recordings.
    """
    import pandas as pd

    from models.callbacks import eval_forward

    out = eval_forward(pl_module, batch)  # the validation's own forward when `batch` is its first batch
    latents = out.get("latents", {}) if isinstance(out, Mapping) else {}
    ssm = latents.get("ssm")
    if ssm is None:
        return None, {}
    fs = float(pl_module.latent_rate(batch)) if hasattr(pl_module, "latent_rate") else 1.0
    cfg_fractals = getattr(pl_module, "fractals_cfg", {}) or {}
    x = ssm.detach().float().transpose(1, 2)[:, :max_channels].cpu()  # (B, C, T)
    try:
        from fractals.fingerprint import fingerprint
        from models.callbacks import latent_band

        temporal = dict(cfg_fractals.get("metrics", {}).get("temporal", {}))
        band = latent_band(x.shape[-1], fs, tuple(temporal.get("psd_freq_band", (2.0, 80.0))))
        temporal["psd_freq_band"] = list(band)
        table, summary = fingerprint(x, fs, {"temporal": temporal})
        return table, summary
    except ImportError:
        pass
    except (ValueError, RuntimeError) as exc:  # e.g. latents too short for a configured window: use the fallback
        print(f"fmx: fractals.fingerprint failed on the latents ({exc}); using the model's latent measures")
    from models.callbacks import latent_measures

    measures = latent_measures(ssm, fs=fs, cfg_fractals=cfg_fractals, max_channels=max_channels)
    rows = [{"channel": f"ch{c}", "measure": _MEASURE_NAMES.get(k, k), "value": float(v[:, i].mean()), "ok": True}
            for k, v in measures.items()
            for i, c in enumerate(_measured_channels(ssm, k, v.shape[1], fs, cfg_fractals, max_channels))]
    table = pd.DataFrame(rows)
    summary = {}
    for m, g in table.groupby("measure") if rows else []:
        summary[f"{m}_mean"], summary[f"{m}_std"] = float(g["value"].mean()), float(g["value"].std())
    return table, summary


def _measured_channels(ssm: torch.Tensor, measure: str, n_columns: int, fs: float, cfg_fractals, max_channels: int):
    """The latent channel of each column of ``latent_measures(...)[measure]``: it drops constant channels, and
    channels a measure's estimator rejects alone (those are found by measuring each channel by itself)."""
    from models.callbacks import latent_measures

    x = ssm.detach().float().transpose(1, 2)  # the same live test as latent_measures
    live = torch.nonzero((x.amax(-1) - x.amin(-1)).amin(0) > 1e-8).flatten()[:max_channels].tolist()
    if n_columns == len(live):
        return live
    return [c for c in live if measure in latent_measures(ssm[:, :, c:c + 1], fs=fs, cfg_fractals=cfg_fractals,
                                                          max_channels=1)]
