"""Portable chunked SSD (Mamba-2 state-space duality) in plain PyTorch.

The scan splits the sequence into chunks: inside a chunk the output is a masked quadratic form
(attention-like, with the decay matrix built from a log-space segment sum), across chunks a small
recurrence passes the ``(H, P, N)`` state. This is the "minimal SSD" algorithm of Dao & Gu (2024):
it runs anywhere torch runs (CPU, CUDA, MPS, meta) and is the reference the fused CUDA kernels of
``mamba_ssm`` are checked against.

Conventions follow ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``: ``x`` is
``(B, L, H, P)``, ``dt`` ``(B, L, H)`` (already softplus'ed and biased), ``A`` ``(H,)`` negative,
``B``/``C`` ``(B, L, G, N)`` with ``H`` divisible by ``G``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["segsum", "ssd_chunked", "ssd_naive"]


def segsum(x: torch.Tensor) -> torch.Tensor:
    """Stable segment sum: ``out[..., i, j] = sum(x[..., j+1 : i+1])`` for ``i >= j``, else ``-inf``.

    Built from a masked cumulative sum instead of ``cumsum[i] - cumsum[j]``, which cancels
    catastrophically in float32 when the cumulative decay grows large.

    Shape:
        - x: ``(..., T)``
        - output: ``(..., T, T)``
    """
    T = x.size(-1)
    x = x.unsqueeze(-1).expand(*x.shape, T)
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~strict, 0)
    out = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=0)
    return out.masked_fill(~lower, float("-inf"))


def _expand_groups(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    groups = t.shape[2]
    if n_heads % groups:
        raise ValueError(f"B/C: {groups} groups do not divide {n_heads} heads; pick ngroups dividing nheads")
    return t.repeat_interleave(n_heads // groups, dim=2) if groups != n_heads else t


def _check_inputs(x, dt, A, B, C) -> None:
    if x.ndim != 4:
        raise ValueError(f"x: needs shape (batch, length, heads, headdim), got {tuple(x.shape)}")
    b, l, h, _ = x.shape
    if dt.shape != (b, l, h):
        raise ValueError(f"dt: needs shape {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"A: needs shape ({h},), got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if t.ndim != 4 or t.shape[:2] != (b, l):
            raise ValueError(f"{name}: needs shape ({b}, {l}, groups, d_state), got {tuple(t.shape)}")


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    chunk_size: int = 64,
    D: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t``, ``y_t = C_t h_t + D x_t`` by chunks.

    Parameters
    ----------
    x, dt, A, B, C
        Inputs in the ``mamba_chunk_scan_combined`` layout (see module docstring).
    chunk_size
        Chunk length. The intra-chunk work is quadratic in it; 64 suits CPUs, 128-256 GPUs.
    D
        Optional skip, ``(H,)`` or ``(H, P)``.
    initial_states
        Optional ``(B, H, P, N)`` state to start from (for streaming or chunked inference).

    Returns
    -------
    y : torch.Tensor
        ``(B, L, H, P)`` in the dtype of ``x``.
    final_state : torch.Tensor
        ``(B, H, P, N)`` float32 (or float64) state after the last step.

    Shape:
        - x: ``(B, L, H, P)``; dt: ``(B, L, H)``; A: ``(H,)``; B, C: ``(B, L, G, N)``
        - y: ``(B, L, H, P)``; final_state: ``(B, H, P, N)``
    """
    _check_inputs(x, dt, A, B, C)
    if chunk_size < 1:
        raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
    # Under autocast the einsums would drop back to bf16/fp16 and the exp(segsum) decays lose their
    # precision: run the scan in float32 (float64 stays float64) and cast the output back.
    # Devices without autocast (meta) cannot enter the guard, and have nothing to guard against.
    if not torch.amp.is_autocast_available(x.device.type):
        return _ssd_chunked(x, dt, A, B, C, chunk_size=chunk_size, D=D, initial_states=initial_states)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ssd_chunked(x, dt, A, B, C, chunk_size=chunk_size, D=D, initial_states=initial_states)


def _ssd_chunked(x, dt, A, B, C, *, chunk_size, D, initial_states):
    out_dtype = x.dtype
    # The decays are exponentials of sums: accumulate in at least float32 whatever the input dtype.
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    b, seqlen, h, p = x.shape
    Bh = _expand_groups(B, h).to(work)
    Ch = _expand_groups(C, h).to(work)
    dt_w = dt.to(work)
    xd = x.to(work) * dt_w.unsqueeze(-1)
    Ad = dt_w * A.to(work)  # (b, l, h), <= 0

    pad = (-seqlen) % chunk_size
    if pad:
        # Zero input and zero decay leave the state untouched, so padding does not change final_state.
        xd = F.pad(xd, (0, 0, 0, 0, 0, pad))
        Ad = F.pad(Ad, (0, 0, 0, pad))
        Bh = F.pad(Bh, (0, 0, 0, 0, 0, pad))
        Ch = F.pad(Ch, (0, 0, 0, 0, 0, pad))
    nc = (seqlen + pad) // chunk_size
    n = Bh.shape[-1]  # explicit: -1 is ambiguous for an empty sequence
    xd = xd.reshape(b, nc, chunk_size, h, p)
    Bh = Bh.reshape(b, nc, chunk_size, h, n)
    Ch = Ch.reshape(b, nc, chunk_size, h, n)
    Ad = Ad.reshape(b, nc, chunk_size, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    A_cum = torch.cumsum(Ad, dim=-1)

    # 1. intra-chunk (diagonal blocks): masked quadratic form with decay L[i, j] = exp(sum A_(j, i]).
    L = torch.exp(segsum(Ad))
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Ch, Bh, L, xd)

    # 2. state contributed by each chunk, decayed to the chunk end.
    decay_states = torch.exp(A_cum[..., -1:] - A_cum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_states, xd)

    # 3. inter-chunk recurrence on the chunk-boundary states (a tiny segsum over chunks).
    if initial_states is None:
        init = torch.zeros_like(states[:, :1])
    else:
        if initial_states.shape != (b, h, p, states.shape[-1]):
            raise ValueError(
                f"initial_states: needs shape {(b, h, p, states.shape[-1])}, got {tuple(initial_states.shape)}"
            )
        init = initial_states.to(work).unsqueeze(1)
    states = torch.cat([init, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cum[..., -1], (1, 0))))
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = new_states[:, :-1], new_states[:, -1]

    # 4. state -> output inside each chunk.
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Ch, states, torch.exp(A_cum))
    y = (y_diag + y_off).reshape(b, nc * chunk_size, h, p)[:, :seqlen]
    if D is not None:
        skip = D.to(work)
        skip = skip.view(1, 1, h, 1) if skip.ndim == 1 else skip.view(1, 1, h, p)
        y = y + x.to(work) * skip
    return y.to(out_dtype), final_state


def ssd_naive(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    D: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same scan as :func:`ssd_chunked`, one step at a time (slow; the test oracle).

    Shape:
        - as :func:`ssd_chunked`
    """
    _check_inputs(x, dt, A, B, C)
    b, seqlen, h, p = x.shape
    Bh, Ch = _expand_groups(B, h), _expand_groups(C, h)
    n = Bh.shape[-1]
    state = x.new_zeros(b, h, p, n) if initial_states is None else initial_states.to(x.dtype).clone()
    ys = []
    for t in range(seqlen):
        decay = torch.exp(dt[:, t] * A).view(b, h, 1, 1)
        state = decay * state + (dt[:, t].view(b, h, 1) * x[:, t]).unsqueeze(-1) * Bh[:, t].unsqueeze(2)
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)  # an empty sequence, as ssd_chunked allows
    if D is not None:
        y = y + x * (D.view(1, 1, h, 1) if D.ndim == 1 else D.view(1, 1, h, p))
    return y, state
