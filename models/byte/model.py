"""Byte-level language model: per-layer fractal modules followed by Mamba-2 mixing.

A *fractal module* is the FractalNet expansion rule (Larsson et al., 2017) applied to a per-token
MLP: ``f_1(x) = W2 gelu(W1 x)`` and ``f_d(x) = join(f_1(x), f_{d-1}(f_{d-1}(x)))`` with ``join`` the
mean of the branches. "Probabilistic" is local drop-path: in training each join drops every
branch with probability ``drop_path`` (keeping at least one), so the network learns from random
sub-fractals of every depth. Each layer holds ``n_fractals`` modules whose depth and hidden
dimension are drawn from the configured ranges with a fixed seed, averages them into a residual
update, then mixes over time with a Mamba-2 block (:class:`models.backbones.mamba2.Mamba2`, the
portable SSD on CPU, fused kernels on CUDA). The design material's README gives no numbers; this
module's tests and the ``val/bpb`` metric are how it is judged.
"""
from __future__ import annotations

import math
import numbers
import random
from typing import Sequence

import torch
from torch import Tensor, nn

from models._config_options import _is_real, _is_whole
from models.backbones.mamba2 import Mamba2
from models.byte.tokenizer import EOS, VOCAB_SIZE
from models.layers.norms import RMSNorm

__all__ = ["FractalModule", "FractalByteLM", "generate"]


class FractalModule(nn.Module):
    """Recursive FractalNet block of ``depth`` columns on a per-token MLP of width ``hidden``.

    Shape:
        x ``(B, L, d_model)`` -> ``(B, L, d_model)``
    """

    def __init__(self, *, d_model: int, depth: int, hidden: int, drop_path: float = 0.15) -> None:
        super().__init__()
        if not _is_whole(depth, 1):
            raise ValueError(f"depth: must be >= 1, got {depth!r}")
        if not (_is_real(drop_path, 0.0) and float(drop_path) <= 1):
            # NaN or < 0 silently never dropped a branch; > 1 always dropped both
            raise ValueError(f"drop_path: must lie in [0, 1] (branch drop probability per join), got {drop_path!r}")
        depth, drop_path = int(depth), float(drop_path)
        self.depth, self.drop_path = depth, drop_path
        self.base = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))
        self.inner = FractalModule(d_model=d_model, depth=depth - 1, hidden=hidden, drop_path=drop_path) if depth > 1 else None
        self.inner2 = FractalModule(d_model=d_model, depth=depth - 1, hidden=hidden, drop_path=drop_path) if depth > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.inner is None:
            return self.base(x)
        branches = [self.base(x), self.inner2(self.inner(x))]
        if self.training and self.drop_path > 0:
            keep = torch.rand(len(branches)) >= self.drop_path
            if not bool(keep.any()):
                keep[torch.randint(len(branches), (1,))] = True
            branches = [b for b, k in zip(branches, keep) if k]
        return torch.stack(branches).mean(0)


class _Layer(nn.Module):
    def __init__(self, *, d_model: int, fractals: Sequence[tuple[int, int]], drop_path: float, mamba: dict) -> None:
        super().__init__()
        self.norm_f = RMSNorm(d_model)
        self.fractals = nn.ModuleList(FractalModule(d_model=d_model, depth=d, hidden=h, drop_path=drop_path) for d, h in fractals)
        self.norm_m = RMSNorm(d_model)
        self.mixer = Mamba2(d_model=d_model, **mamba)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm_f(x)
        x = x + torch.stack([f(h) for f in self.fractals]).mean(0)
        return x + self.mixer(self.norm_m(x))


class FractalByteLM(nn.Module):
    """Byte embedding -> L x (fractal modules + Mamba-2) -> RMSNorm -> tied byte head.

    Parameters
    ----------
    d_model, n_layers : int
        Width and number of layers.
    n_fractals : int
        Fractal modules per layer.
    depth_range, dim_range : (min, max)
        Inclusive ranges from which each module's depth and hidden width are drawn.
    seed : int
        Seeds those draws, so a config always builds the same architecture.
    drop_path : float
        Branch drop probability at each fractal join during training.
    mamba : dict
        Extra :class:`Mamba2` arguments (``d_state``, ``headdim``, ``expand``, ``chunk_size``...).

    Shape:
        ids ``(B, L)`` long -> logits ``(B, L, 259)``
    """

    def __init__(self, *, d_model: int = 128, n_layers: int = 2, n_fractals: int = 2,
                 depth_range: tuple[int, int] = (1, 3), dim_range: tuple[int, int] = (64, 256), seed: int = 0,
                 drop_path: float = 0.15, mamba: dict | None = None) -> None:
        super().__init__()
        # TypeErrors from torch ("empty(): argument 'size'...") or int() named none of these; n_layers 0 built a
        # model without a layer (each byte's logits from that byte alone).
        for name, value in (("d_model", d_model), ("n_layers", n_layers)):
            if not _is_whole(value, 1):
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if not _is_whole(n_fractals, 1):  # each layer averages its fractal modules: none is an empty mean
            raise ValueError(f"n_fractals: must be >= 1 (fractal modules per layer), got {n_fractals!r}")
        d_model, n_layers, n_fractals = int(d_model), int(n_layers), int(n_fractals)
        for name, pair in (("depth_range", depth_range), ("dim_range", dim_range)):
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_whole(v, 1) for v in pair)
            if not ok or int(pair[0]) > int(pair[1]):
                raise ValueError(f"{name}: needs [min, max] integers with 1 <= min <= max, got {pair!r}")
        depth_range, dim_range = tuple(int(v) for v in depth_range), tuple(int(v) for v in dim_range)
        if not (_is_real(drop_path, 0.0) and float(drop_path) <= 1):
            raise ValueError(f"drop_path: must lie in [0, 1] (branch drop probability per join), got {drop_path!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            # random.Random(None) seeds from the clock: the checkpoint then rebuilt another architecture.
            raise ValueError(f"seed: must be an integer (it fixes the drawn architecture), got {seed!r}")
        rng = random.Random(int(seed))
        self.architecture = [
            [(rng.randint(*depth_range), rng.randint(*dim_range)) for _ in range(n_fractals)] for _ in range(n_layers)
        ]
        mamba = {"d_state": 32, "headdim": 32, "expand": 2, **(mamba or {})}
        self.embed = nn.Embedding(VOCAB_SIZE, d_model)
        try:
            self.layers = nn.ModuleList(_Layer(d_model=d_model, fractals=fr, drop_path=drop_path, mamba=mamba)
                                        for fr in self.architecture)
        except (TypeError, ValueError) as exc:  # the other options are checked above: a bad mamba option
            raise ValueError(f"mamba.{exc}" if isinstance(exc, ValueError) else f"mamba: {exc}") from exc
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB_SIZE, bias=False)
        self.head.weight = self.embed.weight  # tied: fewer parameters, better small-data fits
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d_model))

    def forward(self, ids: Tensor) -> Tensor:
        # A 1-D id list failed inside Mamba-2 naming its own argument "u"; float ids inside the embedding.
        if ids.ndim != 2 or ids.shape[1] < 1 or ids.is_floating_point() or ids.is_complex():
            raise ValueError(f"ids: needs an integer (batch, length >= 1) tensor of byte ids, got shape "
                             f"{tuple(ids.shape)} dtype {ids.dtype}; add a batch axis with ids[None]")
        ids = ids.long()  # raw bytes come as uint8, which the embedding refused
        lo, hi = torch.stack(torch.aminmax(ids)).tolist()  # one host sync
        if lo < 0 or hi >= VOCAB_SIZE:  # was an IndexError "index out of range in self" inside the embedding
            raise ValueError(f"ids: byte ids must lie in [0, {VOCAB_SIZE}) (bytes 0-255 and the specials), got range "
                             f"[{lo}, {hi}]; encode data with models.byte.tokenizer.encode")
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


@torch.no_grad()
def generate(model: FractalByteLM, prompt: Sequence[int], *, max_new: int = 64, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None,
             stop_at_eos: bool = True) -> list[int]:
    """Sample up to ``max_new`` tokens after ``prompt`` (greedy when ``temperature == 0``).

    The candidates are the 256 bytes and EOS (PAD and BOS never occur in training data). With
    ``stop_at_eos`` generation ends when the model emits EOS, the separator it learned between files,
    and the returned ids end with that EOS; without it EOS is never sampled, so exactly ``max_new``
    bytes come back. The whole sequence is re-run each step (the portable SSD has no incremental
    decode path), so cost grows with length: fine for the short generations ``fmx infer`` makes.
    """
    # A tensor of ids is a natural prompt: ``not tensor`` raised "ambiguous" and ids outside the
    # vocabulary an IndexError deep in the embedding.
    ids = [int(i) for i in (prompt.reshape(-1).tolist() if isinstance(prompt, Tensor) else prompt)]
    if not ids:
        raise ValueError("prompt: needs at least one token (start an empty prompt with EOS, the training data's separator)")
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"prompt: token ids must lie in [0, {VOCAB_SIZE}) (bytes 0-255 and the specials), "
                         f"got {bad[:5]}; encode text with models.byte.tokenizer.encode")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k: must be >= 0 (0 or None keeps every byte), got {top_k}")
    if max_new < 0:
        raise ValueError(f"max_new: must be >= 0 (tokens to generate), got {max_new}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    allowed = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
    allowed[:256] = True
    allowed[EOS] = stop_at_eos
    for _ in range(max_new):
        logits = model(torch.tensor([ids], device=device))[0, -1].float().cpu()
        if not bool(torch.isfinite(logits[allowed]).all()):
            # Greedy argmax of NaN logits silently gave byte 0 forever; sampling crashed in multinomial.
            raise ValueError("model: the next-byte logits are not finite (NaN/inf weights, e.g. a diverged "
                             "checkpoint); retrain or load an earlier checkpoint")
        logits = logits.masked_fill(~allowed, float("-inf"))
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            # Shift before dividing: the best byte sits at 0, so a tiny temperature cannot overflow to inf.
            # float64: a temperature above float32's max (3.4e38) was inf there, and -inf / inf is NaN.
            logits = (logits.double() - logits.max()) / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, int(allowed.sum()))).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, -1)
            if generator is not None:  # a CUDA generator (model on CUDA) cannot sample from CPU probabilities
                probs = probs.to(generator.device)
            nxt = int(torch.multinomial(probs, 1, generator=generator))
        ids.append(nxt)
        if nxt == EOS:
            break
    model.train(was_training)
    return ids
