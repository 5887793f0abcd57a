"""Interpretability probes: latent fractal summaries, attention-FD coupling, scale ablation, FC graphs.

- :func:`latent_fd_probe` summarises Higuchi FD, 1/f slope, Hurst H and multifractal width of one
  or several latent tensors (per layer) for logging.
- :func:`attention_fd_coupling` correlates the attention each key receives with that key's FD,
  per layer and head.
- :func:`causal_scale_ablation` removes one end of the spectrum inside a band (FFT mask), the
  intervention for "which scales does the model rely on".
- :func:`fc_fd_probe` builds per-sample functional-connectivity graphs of latent channels and
  relates their graph FD to labels.

Probes run under ``torch.no_grad`` and never change their inputs.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from fractals._checks import as_tensor, check_finite, check_open_unit, check_positive, pow2_scale, to_input_kind
from fractals.regularizers import _check_time_dim

__all__ = ["latent_fd_probe", "attention_fd_coupling", "causal_scale_ablation", "fc_fd_probe", "ablation_mask"]


def _metrics_cfg(cfg: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise ValueError(f"cfg: needs a mapping (the fractals config block), got {type(cfg).__name__}")
    return cfg.get("metrics", cfg) or {}


@torch.no_grad()
def latent_fd_probe(
    latents: Any,
    cfg: Optional[Mapping[str, Any]] = None,
    *,
    fs: Optional[float] = None,
    time_dim: int = 1,
    max_channels: int = 64,
) -> dict[str, torch.Tensor]:
    """Fractal summary of latents for logging: mean and SD over channels of FD, beta, H, MF width.

    Parameters
    ----------
    latents : tensor (B, T, C) or mapping name -> tensor
        One tensor per layer; time on ``time_dim``.
    cfg : mapping, optional
        The ``fractals`` config block (or its ``metrics`` block): ``higuchi_kmax``,
        ``psd_freq_band``, ``exclude_peaks``, ``multifractal.q_vals/scales``, ``sample_rate_hz``.
    fs : float, optional
        Latent rate in Hz; default ``metrics.sample_rate_hz`` (1000). The 1/f band's upper edge is
        clipped to 0.45 fs so slow latents still get a slope.
    max_channels : int
        Only the first ``max_channels`` channels are measured (cost control during training).

    Returns
    -------
    dict
        ``"{name}/{measure}_{mean|std}"`` -> 0-dim tensor for measures ``higuchi_fd``,
        ``spectral_beta``, ``hurst`` (from DFA alpha, fGn mapping) and ``mf_width``; a plain tensor
        gives names without the ``{name}/`` prefix. Channels constant in time for every sample are
        left out and counted in ``n_dead``; a series constant for some samples only is left out of
        the measures, its channel still live. A measure the latents are too short for is omitted; a channel
        one estimator rejects (e.g. exactly periodic) is left out of that measure only.
    """
    from fractals import metrics as fm

    layers = latents if isinstance(latents, Mapping) else {"": latents}
    if isinstance(max_channels, bool) or not isinstance(max_channels, (int, np.integer)) or max_channels < 1:
        # -1 sliced off the last channel silently (x[:, :-1])
        raise ValueError(f"max_channels: needs an integer >= 1, got {max_channels!r}")
    mcfg = _metrics_cfg(cfg)
    temporal = mcfg.get("temporal", {}) or {}
    mf = mcfg.get("multifractal", {}) or {}
    rate = float(fs if fs is not None else mcfg.get("sample_rate_hz", 1000.0))
    check_positive(rate, "fs")
    out: dict[str, torch.Tensor] = {}
    for name, lat in layers.items():
        if not isinstance(lat, torch.Tensor) or lat.ndim < 2:
            raise ValueError(f"latents[{name!r}]: needs a tensor with >= 2 dims (B, T, C), got {type(lat).__name__}")
        _check_time_dim(time_dim, lat.shape, f"latents[{name!r}]")
        x = lat.detach().movedim(time_dim, -1)
        if x.dtype != torch.float64:  # float64 stays: cast to float32, 1e-150 latents read as dead, 1e150 as inf
            x = x.float()
        # Before the reshape: with no channel its -1 was ambiguous (a RuntimeError); with no batch amin raised.
        if x.numel() == 0:
            raise ValueError(f"latents[{name!r}]: is empty (shape {tuple(lat.shape)}); "
                             "needs at least one (T, C) series")
        x = x.reshape(-1, x.shape[-2], x.shape[-1]) if x.ndim >= 3 else x.unsqueeze(0)
        x = x[:, :max_channels]
        check_finite(x, f"latents[{name!r}]")
        varies = (x.amax(-1) - x.amin(-1)) > 0  # (N, C): a series the estimators can measure
        live = varies.any(0)  # a unit is dead only when it is constant for every sample
        prefix = f"{name}/" if name else ""
        out[f"{prefix}n_dead"] = torch.tensor(float((~live).sum()))
        if not bool(live.any()):
            continue
        # A ReLU-like unit flat for one sample of the batch was counted dead and left out for all of them.
        # Its flat series alone are left out: the live series then go as one (1, S, T) batch.
        x = x[:, live] if bool(varies[:, live].all()) else x[varies].unsqueeze(0)
        n = x.shape[-1]
        band = _band_pair(temporal.get("psd_freq_band", (2.0, 80.0)), "cfg.temporal.psd_freq_band")
        band = (band[0], min(band[1], 0.45 * rate))
        scales = [int(s) for s in mf.get("scales", (8, 16, 32, 64, 128, 256)) if int(s) <= n // 4]
        dfa_windows = [int(w) for w in temporal.get("dfa_orders", (4, 16, 64, 256)) if 4 <= int(w) <= n // 2]
        dfa_windows = dfa_windows if len(dfa_windows) >= 2 else []  # one window gives no slope: DFA's defaults
        calls = {
            "higuchi_fd": lambda s: fm.higuchi_fd(s, kmax=min(int(temporal.get("higuchi_kmax", 8)), n // 4)),
            "spectral_beta": lambda s: fm.spectral_beta(s, rate, band, bool(temporal.get("exclude_peaks", True))),
            # the config's DFA windows that fit (as the training callbacks' latent_measures): DFA's defaults need
            # T >= 256, so latents of 32-64 steps never got a Hurst value
            "hurst": lambda s: fm.hurst_from_dfa(fm.dfa_alpha(s, windows=dfa_windows or None)),
            "mf_width": lambda s: fm.multifractal_spectrum(s, list(mf.get("q_vals", (-5, -3, -1, 0, 1, 3, 5))),
                                                           scales)["width"],
        }
        for measure, call in calls.items():
            v = _measure_channels(call, x)
            if v is None:
                continue  # too short, band empty, or the estimator rejected them: nothing honest to log
            out[f"{prefix}{measure}_mean"] = v.mean()
            out[f"{prefix}{measure}_std"] = v.std(unbiased=False)
    return out


def _measure_channels(call, x: torch.Tensor) -> Optional[torch.Tensor]:
    """``call`` on ``(N, C, T)`` latents, or None when no channel can be measured.

    When the estimator rejects the batch, retry channel by channel: one degenerate channel (exactly
    periodic for Higuchi, piecewise flat at every DFA/MFDFA scale) dropped the measure for the whole layer.
    """
    try:
        return torch.as_tensor(call(x)).float()
    except (ValueError, torch.linalg.LinAlgError):
        if x.shape[1] == 1:
            return None
    kept = []
    for c in range(x.shape[1]):
        try:
            kept.append(torch.as_tensor(call(x[:, c:c + 1])).float())
        except (ValueError, torch.linalg.LinAlgError):
            pass
    return torch.cat(kept, 1) if kept else None


def _as_tensor_view(v: Any) -> torch.Tensor:
    """``torch.as_tensor`` that also takes NumPy views with negative strides (``np.flip``, ``[::-1]``),
    which it refuses ("At least one stride in the given numpy array is negative")."""
    return torch.as_tensor(np.asarray(v, order="C") if isinstance(v, np.ndarray) else v)


def _pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    # float64 and power-of-two scaled (exact): in float32, FD values of 1e19 overflowed the
    # denominator (r = 0) and of 1e-30 underflowed it (r = NaN), and an offset of 1e6 cancelled.
    a, b = a.double(), b.double()
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    a, b = a / pow2_scale(a, dim), b / pow2_scale(b, dim)
    den = a.square().sum(dim).sqrt() * b.square().sum(dim).sqrt()
    r = (a * b).sum(dim) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan")))


@torch.no_grad()
def attention_fd_coupling(
    attn_weights: Any,
    series_fd: Any,
    *,
    reduce_queries: str = "mean",
    method: str = "pearson",
) -> torch.Tensor:
    """Per layer and head: correlation between the attention a key receives and that key's FD.

    For every layer and head, attention is summed (or averaged) over queries to give the weight
    each key position receives; those weights are correlated with ``series_fd`` over all
    (batch, key) pairs. A positive r means the head attends to the rougher (higher-FD) parts of
    the input. A head with constant received attention gets NaN (the correlation is undefined),
    so it is visible, not hidden as 0.

    Parameters
    ----------
    attn_weights : tensor (L, B, H, Q, K), (B, H, Q, K), or sequence/mapping of (B, H, Q, K)
        Attention probabilities per layer (softmax over K).
    series_fd : tensor (B, K)
        FD (or H, beta, or its change) of the input or latent window each key covers; pass
        ``fd.diff(dim=-1)`` aligned to keys to couple with local FD changes.
    reduce_queries : "mean" or "max"
        How the attention a key receives is pooled over queries.
    method : "pearson" or "spearman"
        Pearson r on the pooled weights, or Spearman (ranks; insensitive to the exponential
        shape of softmax: a head whose logits grow linearly with FD has Spearman near 1 while its
        Pearson r is damped).

    Returns
    -------
    tensor (L, H)
        Correlation per layer and head; ``L = 1`` for a single (B, H, Q, K) tensor.
    """
    if isinstance(attn_weights, Mapping):
        attn_weights = list(attn_weights.values())
    if isinstance(attn_weights, (list, tuple)):
        layers = [_as_tensor_view(a) for a in attn_weights]
        shapes = [tuple(a.shape) for a in layers]
        if not shapes or len(set(shapes)) > 1:  # else torch.stack's RuntimeError
            raise ValueError(f"attn_weights: needs one or more layers of equal shape (B, H, Q, K), got shapes "
                             f"{shapes}; pass layers with different head counts separately")
        attn = torch.stack(layers)
    else:
        attn = _as_tensor_view(attn_weights)
    if attn.ndim == 4:
        attn = attn.unsqueeze(0)
    if attn.ndim != 5:
        raise ValueError(f"attn_weights: needs shape (L, B, H, Q, K) or (B, H, Q, K), got {tuple(attn.shape)}")
    fd = _as_tensor_view(series_fd).to(attn.device)
    L, B, H, Q, K = attn.shape
    if fd.shape != (B, K):
        raise ValueError(f"series_fd: needs shape (B, K) = ({B}, {K}) to match attn_weights, got {tuple(fd.shape)}")
    if attn.numel() == 0:  # else a silent NaN per head (a correlation over no keys, a mean over no queries)
        raise ValueError(f"attn_weights: is empty (shape {tuple(attn.shape)}); needs at least one query and key")
    if reduce_queries not in ("mean", "max"):
        raise ValueError(f"reduce_queries: must be 'mean' or 'max', got {reduce_queries!r}")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method: must be 'pearson' or 'spearman', got {method!r}")
    attn = attn.float()
    fd = fd.to(torch.float64) if fd.dtype == torch.float64 else fd.float()  # 1e-150 FDs are not zero
    check_finite(attn, "attn_weights")
    check_finite(fd, "series_fd")
    received = attn.mean(-2) if reduce_queries == "mean" else attn.amax(-2)  # (L, B, H, K)
    received = received.permute(0, 2, 1, 3).reshape(L, H, B * K)
    target = fd.reshape(1, 1, B * K).expand(L, H, B * K)
    if method == "spearman":
        received, target = _ranks(received), _ranks(target)
    return _pearson(received, target).float()


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last axis (ties share their mean rank, as scipy.stats.rankdata)."""
    sorted_v, order = v.sort(-1)
    pos = torch.arange(v.shape[-1], dtype=torch.float64, device=v.device).expand(v.shape).contiguous()
    # Mean position of each run of equal values.
    new_run = torch.ones_like(sorted_v, dtype=torch.bool)
    new_run[..., 1:] = sorted_v[..., 1:] != sorted_v[..., :-1]
    run_id = new_run.long().cumsum(-1) - 1
    sums = torch.zeros_like(pos).scatter_add_(-1, run_id, pos)
    counts = torch.zeros_like(pos).scatter_add_(-1, run_id, torch.ones_like(pos))
    mean_pos = (sums / counts.clamp_min(1)).gather(-1, run_id)
    return torch.empty_like(mean_pos).scatter_(-1, order, mean_pos).to(v.dtype)


def _band_pair(band, name: str) -> tuple[float, float]:
    """``(lo, hi)`` as floats; a 1-tuple was an IndexError, a string a bare float() message."""
    try:
        lo, hi = (float(v) for v in band)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: needs a (lo_hz, hi_hz) pair of numbers, got {band!r}") from exc
    return lo, hi


def ablation_mask(n: int, fs: float, mode: str, ratio: float, band: Sequence[float], *, device=None) -> torch.Tensor:
    """Boolean mask over the ``n // 2 + 1`` rFFT bins: True for the bins :func:`causal_scale_ablation` removes.

    The in-band bins are those with ``band[0] <= f <= band[1]`` (DC excluded); ``k = round(ratio *
    n_in_band)`` of them (at least 1) are removed: the ``k`` highest-frequency in-band bins for
    ``"high_beta_only"`` (fine temporal structure), the ``k`` lowest for ``"low_beta_only"`` (slow
    structure). Bins outside the band are never touched.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:  # else rfftfreq's TypeError/RuntimeError
        raise ValueError(f"n: needs an integer >= 1 (the series length in samples), got {n!r}")
    n = int(n)
    if mode not in ("high_beta_only", "low_beta_only"):
        raise ValueError(f"mode: must be 'high_beta_only' or 'low_beta_only', got {mode!r}")
    check_open_unit(ratio, "ratio")
    check_positive(fs, "fs")
    lo, hi = _band_pair(band, "band")
    if not 0 <= lo < hi:
        raise ValueError(f"band: needs (lo, hi) with 0 <= lo < hi, got {tuple(band)!r}")
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=torch.float64, device=device)
    in_band = torch.nonzero((freqs >= lo) & (freqs <= hi) & (freqs > 0)).flatten()
    if in_band.numel() < 2:
        raise ValueError(
            f"band: {(lo, hi)} Hz holds {in_band.numel()} FFT bins for n={n} at fs={fs}; need >= 2: "
            "widen the band or pass a longer signal"
        )
    k = max(1, int(round(float(ratio) * in_band.numel())))
    chosen = in_band[-k:] if mode == "high_beta_only" else in_band[:k]
    mask = torch.zeros(freqs.numel(), dtype=torch.bool, device=device)
    mask[chosen] = True
    return mask


@torch.no_grad()
def causal_scale_ablation(
    x: Any,
    mode: str = "high_beta_only",
    ratio: float = 0.15,
    fs: float = 1000.0,
    band: Sequence[float] = (2.0, 80.0),
    *,
    dim: int = -1,
    replace: str = "zero",
    generator: Optional[torch.Generator] = None,
):
    """Remove one end of the spectrum inside ``band`` from ``x`` (same shape and kind back).

    The signal's rFFT along ``dim`` is masked by :func:`ablation_mask`: ``"high_beta_only"``
    removes the top ``ratio`` fraction of in-band bins (highest frequencies: the fine-scale
    components that steep, high-beta spectra carry least power in), ``"low_beta_only"`` the bottom
    ``ratio`` fraction (the slow components). ``replace="zero"`` zeroes those bins;
    ``replace="phase"`` keeps their magnitudes and randomises their phases (removes the temporal
    structure at those scales while keeping the power spectrum). The inverse rFFT has the
    original length; DC and out-of-band bins are unchanged, so ``x - ablated`` is exactly the
    removed band.

    Shape:
        x: ``(..., T)`` with time on ``dim``. Output: same shape, dtype and kind (NumPy or torch).
    """
    t, was_numpy = as_tensor(x, "x")
    if t.numel() == 0:  # else an MKL "inconsistent configuration" RuntimeError from the FFT
        raise ValueError(f"x: is empty (shape {tuple(t.shape)}); needs at least one series")
    check_finite(t, "x")
    if replace not in ("zero", "phase"):
        raise ValueError(f"replace: must be 'zero' or 'phase', got {replace!r}")
    nd = t.ndim
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -nd <= dim < max(nd, 1):
        raise ValueError(f"dim: needs an axis of x with shape {tuple(t.shape)} (an integer in [{-nd}, {nd - 1}]), "
                         f"got {dim!r}")
    moved = t.movedim(dim, -1)
    n = moved.shape[-1]
    mask = ablation_mask(n, fs, mode, ratio, band, device=t.device)
    # The ablation is linear and leaves DC alone: run it on each series divided by a power of two
    # (exact) with its mean removed, then scale back and restore the mean. Else the float32 FFT of
    # |x| >~ 1e34 overflows into a NaN output, and an offset of 1e6 spreads its rounding over every
    # bin (the removed band was off by 0.3).
    scale = pow2_scale(moved)
    unit = moved / scale
    dc = unit.mean(-1, keepdim=True, dtype=torch.float64).to(unit.dtype)
    spec = torch.fft.rfft(unit - dc, dim=-1)
    if replace == "zero":
        spec = spec.masked_fill(mask, 0)
    else:
        phase = torch.rand(spec.shape, generator=generator, dtype=moved.dtype,
                           device=generator.device if generator is not None else t.device).to(t.device)
        rotated = spec.abs() * torch.exp(1j * 2 * math.pi * phase)
        if n % 2 == 0:
            # The Nyquist bin of a real series is real (irfft drops its imaginary part): the only
            # phases that keep its power are 0 and pi.
            rotated[..., -1] = spec[..., -1].abs() * torch.where(phase[..., -1] < 0.5, 1.0, -1.0)
        spec = torch.where(mask, rotated.to(spec.dtype), spec)
    # as_tensor computes half precision in float32; the caller gets their own dtype back.
    src = getattr(x, "dtype", None)
    out_dtype = src if src in (torch.float16, torch.bfloat16) else torch.float16 if src == np.float16 else t.dtype
    out = ((torch.fft.irfft(spec, n=n, dim=-1) + dc) * scale).to(out_dtype).movedim(-1, dim)
    return to_input_kind(out, was_numpy)


@torch.no_grad()
def fc_fd_probe(
    latents: Any,
    *,
    thresh: float = 0.3,
    eps_values: Sequence[int] = (1, 2, 3, 4, 5, 6),
    method: str = "pearson",
    labels: Optional[Any] = None,
    time_dim: int = 1,
) -> dict[str, Any]:
    """Per-sample functional-connectivity graph of latent channels and its graph FD.

    Parameters
    ----------
    latents : tensor (B, T, C)
        One graph per sample over its C channels (time on ``time_dim``).
    thresh, eps_values, method
        Passed to :func:`fractals.metrics.functional_connectivity_latents` and
        :func:`fractals.metrics.graph_fractal_dim`.
    labels : array (B,), optional
        Behaviour or state per sample. Numeric labels give the Spearman correlation with graph FD;
        any labels give the mean graph FD per label.

    Returns
    -------
    dict
        ``graph_fd`` (B,) (NaN for a sample whose graph has no edge or too few boxes to fit,
        e.g. a complete graph), ``density`` (B,) fraction of linked channel pairs, and with labels
        ``by_label`` {label: mean FD} and ``spearman_r`` (NaN when labels are not numeric or FD is
        constant).
    """
    from fractals import metrics as fm

    t, _ = as_tensor(latents, "latents")
    if t.ndim != 3:
        raise ValueError(f"latents: needs shape (B, T, C), got {tuple(t.shape)}")
    _check_time_dim(time_dim, t.shape)
    x = t.movedim(time_dim, 1)  # (B, T, C), the layout functional_connectivity_latents takes
    adj = fm.functional_connectivity_latents(x, method=method, thresh=thresh)
    adj = torch.as_tensor(adj)
    c = adj.shape[-1]
    off = ~torch.eye(c, dtype=torch.bool, device=adj.device)
    density = (adj != 0)[..., off].float().mean(-1)
    fd = torch.full((adj.shape[0],), float("nan"), dtype=torch.float64)
    has_edges = torch.nonzero(density > 0).flatten()
    if has_edges.numel():
        # An edgeless graph (every |r| below thresh) has no box dimension: NaN for that sample only.
        try:
            fd[has_edges.cpu()] = torch.as_tensor(
                fm.graph_fractal_dim(adj[has_edges], list(eps_values))).reshape(-1).double().cpu()
        except ValueError as exc:
            if not str(exc).startswith("adj: graph"):
                raise  # bad eps_values: every sample would fail the same way
            # One graph the box covering rejects (a complete graph has one box at every size > 1)
            # must not sink the batch: measure sample by sample, NaN for the rejected ones.
            for i in has_edges.tolist():
                try:
                    fd[i] = float(torch.as_tensor(fm.graph_fractal_dim(adj[i], list(eps_values))).reshape(-1)[0])
                except ValueError:
                    pass
    # On the input's device, as ``density`` (a CPU graph_fd beside CUDA densities broke ``graph_fd * density``).
    out: dict[str, Any] = {"graph_fd": fd.to(density.device), "density": density}
    if labels is not None:
        lab = list(labels.tolist() if hasattr(labels, "tolist") else labels)
        if len(lab) != fd.numel():
            raise ValueError(f"labels: has {len(lab)} entries for {fd.numel()} samples")
        missing = [i for i, v in enumerate(lab) if isinstance(v, numbers.Real) and v != v]  # NaN, any float type
        if missing:  # NaN != NaN: its group was an empty index (an IndexError)
            raise ValueError(f"labels: NaN at sample(s) {missing[:5]}; drop those samples or give them a label")
        by = {}
        for key in dict.fromkeys(lab):
            idx = torch.tensor([i for i, v in enumerate(lab) if v == key])
            by[key] = float(torch.nanmean(fd[idx]))
        out["by_label"] = by
        try:
            num = [float(v) for v in lab]
        except (TypeError, ValueError):
            out["spearman_r"] = float("nan")
        else:
            from scipy.stats import spearmanr

            fd_np = fd.numpy()
            ok = np.isfinite(fd_np)
            num_ok = np.asarray(num)[ok]
            const = ok.sum() < 3 or len(set(num_ok)) < 2 or float(np.ptp(fd_np[ok])) == 0.0
            out["spearman_r"] = float("nan") if const else float(spearmanr(num_ok, fd_np[ok]).statistic)
    return out
