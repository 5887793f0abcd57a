"""Triton kernel for the greedy box-covering colouring (optional; CUDA, or Triton's CPU interpreter).

The colouring is sequential over nodes. As torch ops it is ~6 kernel launches per node (the
``_greedy_box_counts`` loop in :mod:`fractals.box_covering`), so on a GPU a 256-node batch is bound by
~1500 launches, not by arithmetic. Here one program colours one (graph, box size) lane start to
finish: the colour classes are bitsets held in registers (``BLOCK_C`` classes x ``BLOCK_W`` 64-bit
words), and a node takes the first class whose bitset does not meet its dual row, exactly as the
NumPy kernel ``_colour_classes`` does on CPU. One launch for the whole batch.

Registers bound the size: ``next_pow2(N)`` classes x ``ceil(N / 64)`` words, 1024 words per program at
``MAX_NODES = 256`` (the design's graph size); larger graphs keep the torch loop.
"""
from __future__ import annotations

import torch

from fractals._triton import tl, triton, warn_fallback

__all__ = ["ENABLED", "MAX_NODES", "available", "colour_counts", "disable"]

ENABLED = True  # False keeps the torch loop on CUDA too (benchmarks/metrics.py compares the two)
MAX_NODES = 256


def available(device: torch.device, n_nodes: int) -> bool:
    """True when the kernel can colour ``n_nodes``-node graphs on ``device``."""
    return ENABLED and triton is not None and device.type == "cuda" and n_nodes <= MAX_NODES


def disable(exc: Exception) -> None:
    """The kernel failed at run time: the torch path from now on."""
    global ENABLED
    ENABLED = False
    warn_fallback(__name__, exc)


def pack_rows(dual: torch.Tensor) -> torch.Tensor:
    """``(..., N, N)`` bool -> ``(..., N, ceil(N / 64))`` int64 bitsets, bit j of word w = column 64 w + j."""
    n = dual.shape[-1]
    words = -(-n // 64)
    padded = torch.nn.functional.pad(dual, (0, 64 * words - n)).to(torch.uint8)
    shifts = torch.arange(8, dtype=torch.uint8, device=dual.device)
    packed = (padded.unflatten(-1, (8 * words, 8)) << shifts).sum(-1, dtype=torch.uint8)  # little-endian bytes
    return packed.contiguous().view(torch.int64)


if triton is not None:

    @triton.jit
    def _colour_kernel(rows_ptr, order_ptr, take_ptr, counts_ptr,
                       N_NODES: tl.constexpr, W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr):
        # N_NODES is a compile-time constant: one specialisation per graph size, which a training run
        # keeps fixed (and Triton's CPU interpreter cannot take a runtime loop bound).
        lane = tl.program_id(0).to(tl.int64)
        cls = tl.arange(0, BLOCK_C)
        wrd = tl.arange(0, BLOCK_W)
        classes = tl.zeros((BLOCK_C, BLOCK_W), dtype=tl.int64)
        one = tl.full((1,), 1, dtype=tl.int64)
        for s in range(0, N_NODES):
            v = tl.load(order_ptr + lane * N_NODES + s).to(tl.int64)
            on = tl.load(take_ptr + lane * N_NODES + s)
            row = tl.load(rows_ptr + (lane * N_NODES + v) * W + wrd, mask=wrd < W, other=0)
            clash = tl.max(((classes & row[None, :]) != 0).to(tl.int32), axis=1)  # (BLOCK_C,)
            k = tl.min(tl.where(clash == 0, cls, BLOCK_C), axis=0)  # first class it may join
            bit = one << (v % 64)
            hit = (cls[:, None] == k) & (wrd[None, :] == v // 64) & (on != 0)
            classes = tl.where(hit, classes | bit[None, :], classes)
        opened = tl.max((classes != 0).to(tl.int32), axis=1)
        tl.store(counts_ptr + lane, tl.sum(opened, axis=0).to(tl.int64))


def colour_counts(dual: torch.Tensor, order: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Greedy colouring counts per lane.

    Parameters
    ----------
    dual : torch.Tensor
        ``(lanes, N, N)`` bool dual graphs (i ~ j when d_ij >= l_B), rows and columns of nodes
        outside the covered set all False.
    order : torch.Tensor
        ``(lanes, N)`` colouring order (a permutation of the nodes).
    active : torch.Tensor
        ``(lanes, N)`` bool, whether the node at each *step* is coloured.

    Returns
    -------
    torch.Tensor
        ``(lanes,)`` int64 number of colour classes (boxes).

    Shape:
        ``(lanes, N, N), (lanes, N), (lanes, N) -> (lanes,)``; ``N <= MAX_NODES``.
    """
    if triton is None:
        raise RuntimeError("colour_counts: triton is not importable; use the torch loop")
    lanes, n, _ = dual.shape
    if n > MAX_NODES:
        raise ValueError(f"dual: at most MAX_NODES={MAX_NODES} nodes fit the kernel's registers, got {n}")
    rows = pack_rows(dual)
    w = rows.shape[-1]
    counts = torch.empty(lanes, dtype=torch.int64, device=dual.device)
    block_w = triton.next_power_of_2(w)
    _colour_kernel[(lanes,)](rows, order.to(torch.int32).contiguous(), active.to(torch.int8).contiguous(), counts,
                             N_NODES=n, W=w, BLOCK_C=triton.next_power_of_2(n), BLOCK_W=block_w,
                             num_warps=4 if n * block_w >= 512 else 1)
    return counts
