"""Functional connectivity graphs, their box-covering fractal dimension, and power-law fits.

- :func:`functional_connectivity_latents`: ``(..., T, C)`` latents to thresholded ``(..., C, C)``
  adjacency from Pearson or partial correlation.
- :func:`graph_fractal_dim`: box dimension d_B of graphs (Song, Havlin & Makse, Nature 2005;
  J. Stat. Mech. 2007): ``N_B(l_B) ~ l_B^-d_B``, with N_B from greedy colouring of the dual graph
  and shortest paths from batched boolean matrix powers (BFS on the device).
- :func:`powerlaw_fit`: Clauset, Shalizi & Newman (SIAM Review 2009): x_min by minimum KS
  distance, MLE exponent, KS statistic and a bootstrap goodness-of-fit p-value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from fractals._checks import as_tensor, check_finite

__all__ = ["functional_connectivity_latents", "graph_fractal_dim", "powerlaw_fit", "PowerLawFit", "BoxCounts"]


# ----------------------------------------------------------------------------- connectivity
def functional_connectivity_latents(latents, method: str = "pearson", thresh: float = 0.3, weighted: bool = False,
                                    *, ridge: Optional[float] = None):
    """Thresholded functional-connectivity adjacency between latent channels.

    Parameters
    ----------
    latents : torch.Tensor or np.ndarray
        ``(..., T, C)``: time on the second-to-last axis, channels last (the model's layout).
    method : {'pearson', 'partial'}
        Pearson correlation, or partial correlation ``-P_ij / sqrt(P_ii P_jj)`` from the precision
        matrix ``P = inv((1 - ridge) R + ridge I)`` of the correlation matrix ``R``.
    thresh : float
        Edge where ``|r| > thresh`` (0 <= thresh < 1).
    weighted : bool
        Return ``|r|`` on the edges instead of 1.
    ridge : float, optional
        Shrinkage for the partial correlation. Default: 0 when ``T > C`` (the sample correlation
        matrix is invertible), else 0.1, because with ``C >= T`` it is singular and the partial
        correlations would be undefined.

    Returns
    -------
    adjacency : same kind as ``latents``, ``(..., C, C)``, zero diagonal, symmetric.

    Shape:
        ``(..., T, C) -> (..., C, C)``. Differentiable in ``latents`` with ``weighted=True``.
        A constant channel raises ``ValueError`` (its correlation is undefined).
    """
    t, was_numpy = as_tensor(latents, "latents")
    if t.ndim < 2:
        raise ValueError(f"latents: needs shape (..., T, C), got {tuple(t.shape)}")
    check_finite(t, "latents")
    if method not in ("pearson", "partial"):
        raise ValueError(f"method: must be 'pearson' or 'partial', got {method!r}")
    if not (isinstance(thresh, (int, float)) and 0 <= thresh < 1):
        raise ValueError(f"thresh: must be a number in [0, 1), got {thresh!r}")
    T, C = t.shape[-2], t.shape[-1]
    if T < 3:
        raise ValueError(f"latents: needs at least 3 time steps on axis -2, got shape {tuple(t.shape)}")
    if C < 2:
        raise ValueError(f"latents: needs at least 2 channels on the last axis, got shape {tuple(t.shape)}")
    xc = t - t.mean(-2, keepdim=True)
    std = xc.square().sum(-2).sqrt()  # (..., C)
    if bool((std == 0).any()):
        flat = (std == 0).reshape(-1, C)
        row, col = (int(v) for v in torch.nonzero(flat)[0])
        raise ValueError(f"latents: channel {col} of series {row} (flattened) is constant; drop it before FC")
    z = xc / std.unsqueeze(-2)
    r = (z.transpose(-1, -2) @ z).clamp(-1.0, 1.0)
    eye = torch.eye(C, dtype=t.dtype, device=t.device)
    if method == "partial":
        lam = (0.0 if T > C else 0.1) if ridge is None else float(ridge)
        if not 0 <= lam < 1:
            raise ValueError(f"ridge: must be in [0, 1), got {ridge!r}")
        prec = torch.linalg.inv((1 - lam) * r + lam * eye)
        d = prec.diagonal(dim1=-2, dim2=-1).sqrt()
        r = (-prec / (d.unsqueeze(-1) * d.unsqueeze(-2))).clamp(-1.0, 1.0)
    absr = r.abs() * (1 - eye)
    edge = absr > thresh
    adj = torch.where(edge, absr, torch.zeros_like(absr)) if weighted else edge.to(t.dtype)
    return adj.detach().cpu().numpy() if was_numpy else adj


# ----------------------------------------------------------------------------- box covering
@dataclass
class BoxCounts:
    """Box counts behind :func:`graph_fractal_dim` (``return_counts=True``).

    Attributes
    ----------
    eps : (L,) box sizes l_B (graph distance; a box holds nodes at pairwise distance < l_B).
    counts : (..., L) number of boxes N_B(l_B) per graph.
    used : (..., L) bool, the points that entered the log-log regression (N_B > 1).
    n_nodes : (...) nodes covered (the largest component, or every node with ``components='sum'``).
    """

    eps: Any
    counts: Any
    used: Any
    n_nodes: Any


def _reachability(a: torch.Tensor) -> torch.Tensor:
    """Transitive closure (with self loops) by repeated squaring of a boolean matrix: (G, N, N)."""
    n = a.shape[-1]
    reach = a | torch.eye(n, dtype=torch.bool, device=a.device)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        nxt = (reach.float() @ reach.float()) > 0
        if torch.equal(nxt, reach):
            break
        reach = nxt
    return reach


def _distances(a: torch.Tensor, max_dist: Optional[int]) -> torch.Tensor:
    """Shortest-path lengths by batched BFS (boolean matrix powers), capped at ``max_dist``.

    Unreached pairs (other component, or farther than ``max_dist``) get ``max_dist + 1`` (or N).
    """
    g, n, _ = a.shape
    cap = n if max_dist is None else max_dist + 1
    dist = torch.full((g, n, n), cap, dtype=torch.long, device=a.device)
    reached = torch.eye(n, dtype=torch.bool, device=a.device).expand(g, n, n).clone()
    dist.masked_fill_(reached, 0)
    af = a.float()
    for step in range(1, cap):
        new = ((reached.float() @ af) > 0) & ~reached
        if not bool(new.any()):
            break
        dist.masked_fill_(new, step)
        reached |= new
    return dist


def _greedy_box_counts(dist: torch.Tensor, nodes: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Greedy colouring of the dual graphs (i~j when d_ij >= l_B), all graphs and sizes at once.

    Nodes are coloured in largest-first order of their dual degree (ties by index, as networkx's
    ``greedy_color(strategy='largest_first')``); each colour class is one box. Returns (G, L).
    """
    g, n, _ = dist.shape
    L = eps.numel()
    dual = (dist.unsqueeze(1) >= eps.view(1, L, 1, 1)) & nodes.view(g, 1, n, 1) & nodes.view(g, 1, 1, n)
    degree = dual.sum(-1)  # (G, L, N); excluded nodes have degree 0 and are skipped below
    order = torch.argsort(degree.masked_fill(~nodes.view(g, 1, n), -1), dim=-1, descending=True, stable=True)
    color = torch.full((g, L, n), n, dtype=torch.long, device=dist.device)  # n = "not coloured yet"
    forbidden = torch.zeros((g, L, n + 1), dtype=torch.bool, device=dist.device)
    for s in range(n):
        v = order[..., s]  # (G, L)
        row = dual.gather(2, v[..., None, None].expand(g, L, 1, n)).squeeze(2)  # dual neighbours of v
        forbidden.zero_()
        forbidden.scatter_(-1, torch.where(row, color, n), True)
        first_free = (~forbidden[..., :n]).to(torch.int8).argmax(-1)
        color.scatter_(-1, v.unsqueeze(-1), first_free.unsqueeze(-1))
    color = torch.where(nodes.view(g, 1, n), color, -1)
    return color.amax(-1) + 1


def graph_fractal_dim(adj, eps_values: Union[Sequence[int], torch.Tensor, np.ndarray, None] = None, *,
                      components: str = "largest", return_counts: bool = False):
    """Box-covering fractal dimension d_B of graphs, batched over leading axes.

    For each box size l_B the nodes are covered with boxes whose members are all at shortest-path
    distance < l_B from each other; the minimum number of boxes N_B is approximated by greedy
    colouring of the dual graph (Song et al. 2007, near-optimal there). ``d_B`` is minus the
    least-squares slope of ``ln N_B`` on ``ln l_B`` over the sizes with ``N_B > 1``. A covering
    found for a smaller size is also valid for a larger one, so ``N_B`` is the running minimum.

    Parameters
    ----------
    adj : torch.Tensor or np.ndarray
        ``(..., N, N)`` symmetric adjacency; any non-zero entry is an edge (weights are ignored),
        the diagonal is ignored.
    eps_values : sequence of int, optional
        Box sizes l_B >= 1, strictly increasing, at least two (config ``graph.box_eps`` is
        ``[1, 2, 3, 4, 5, 6]``). Default: ``2 .. diameter + 1`` over the batch's covered nodes;
        l_B = 1 (every node its own box, N_B = N) is left out because it sits off the scaling
        line on lattices (32 x 32 grid: 1.52 with it, 1.81 without).
    components : {'largest', 'sum'}
        Disconnected graphs: measure the largest connected component (default; ties go to the
        component of the lowest node index; isolated nodes of a thresholded FC graph would
        otherwise add one box at every size and flatten the slope), or cover every node, so the
        counts are summed over components (a box never spans two components).
    return_counts : bool
        Also return a :class:`BoxCounts` with the counts per size.

    Returns
    -------
    d_B : same kind as ``adj``, shape ``(...)``; with ``return_counts`` a ``(d_B, BoxCounts)`` pair.

    Shape:
        ``(..., N, N) -> (...)``. Work is O(L N^2) memory and ``N`` sequential colouring steps,
        each over every graph and box size at once; distances need ``max(eps) - 1`` boolean
        matrix products. Deterministic. Not differentiable (box counts are integers). Measured
        bias on graphs of known dimension with ``eps = 2..9`` (finite size dominates): 24 x 24
        lattice 1.74 and 32 x 32 lattice 1.83 (d = 2); path of 128 nodes 0.98 (d = 1);
        (2,2)-flower generation 4 / 5 2.05 / 2.16 (d = 2); (2,3)-flower generation 4 1.80
        (d = ln 5 / ln 2 = 2.32) and (3,3)-flower generation 3 1.2 (d = 1.63) are too small
        (< 500 nodes) for their scaling range, so treat absolute values on graphs of a few
        hundred nodes as +/- 0.3 and compare graphs of equal size.
    """
    t, was_numpy = as_tensor(adj, "adj")
    if t.ndim < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"adj: needs square adjacency matrices (..., N, N), got shape {tuple(t.shape)}")
    check_finite(t, "adj")
    n = t.shape[-1]
    if n < 2:
        raise ValueError(f"adj: needs at least 2 nodes, got shape {tuple(t.shape)}")
    if components not in ("largest", "sum"):
        raise ValueError(f"components: must be 'largest' or 'sum', got {components!r}")
    batch_shape = t.shape[:-2]
    a = (t.reshape(-1, n, n) != 0)
    a = a & ~torch.eye(n, dtype=torch.bool, device=a.device)
    if not torch.equal(a, a.transpose(-1, -2)):
        raise ValueError("adj: is not symmetric; box covering needs an undirected graph: pass (A + A.T) / 2 or A | A.T")
    edges = a.flatten(1).any(-1)
    if not bool(edges.all()):
        idx = int(torch.nonzero(~edges)[0])
        raise ValueError(f"adj: graph {idx} (flattened) has no edges; its box dimension is undefined: lower the FC threshold")
    reach = _reachability(a)
    if components == "largest":
        size = reach.sum(-1)  # component size seen from each node
        root = size.argmax(-1)  # first node of a largest component
        nodes = reach[torch.arange(a.shape[0], device=a.device), root]
    else:
        nodes = torch.ones(a.shape[:2], dtype=torch.bool, device=a.device)
    if eps_values is None:
        dist = _distances(a, None)
        finite = reach & nodes.unsqueeze(-1) & nodes.unsqueeze(-2)
        diameter = int(torch.where(finite, dist, 0).max())
        eps = torch.arange(2, max(diameter, 2) + 2, device=a.device)
    else:
        eps = torch.as_tensor(np.asarray(eps_values) if not isinstance(eps_values, torch.Tensor) else eps_values)
        if eps.ndim != 1 or eps.numel() < 2 or torch.is_floating_point(eps) and not bool((eps == eps.round()).all()):
            raise ValueError(f"eps_values: needs at least two integer box sizes, got {eps_values!r}")
        eps = eps.long().to(a.device)
        if bool((eps < 1).any()) or bool((eps[1:] <= eps[:-1]).any()):
            raise ValueError(f"eps_values: box sizes must be >= 1 and strictly increasing, got {eps.tolist()}")
        dist = _distances(a, int(eps.max()) - 1)
    # A covering with boxes smaller than l_B is also a covering for l_B, so the count never needs
    # to rise with l_B; greedy colouring can (different dual graphs, different orders).
    counts = torch.cummin(_greedy_box_counts(dist, nodes, eps), dim=-1).values  # (G, L)
    used = counts > 1
    n_used = used.sum(-1)
    if bool((n_used < 2).any()):
        idx = int(torch.nonzero(n_used < 2)[0])
        raise ValueError(
            f"adj: graph {idx} (flattened) needs >= 2 box sizes with more than one box, got counts "
            f"{counts[idx].tolist()} for eps {eps.tolist()}: use smaller eps_values or a sparser graph"
        )
    dtype = t.dtype if torch.is_floating_point(t) else torch.float64
    lx = torch.log(eps.to(dtype))
    ly = torch.log(counts.to(dtype))
    w = used.to(dtype)
    mx = (w * lx).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
    my = (w * ly).sum(-1, keepdim=True) / w.sum(-1, keepdim=True)
    slope = (w * (lx - mx) * (ly - my)).sum(-1) / (w * (lx - mx) ** 2).sum(-1)
    d_b = (-slope).reshape(batch_shape).to(t.device)
    if not return_counts:
        return d_b.cpu().numpy() if was_numpy else d_b
    box = BoxCounts(eps=eps, counts=counts.reshape(*batch_shape, -1), used=used.reshape(*batch_shape, -1),
                    n_nodes=nodes.sum(-1).reshape(batch_shape))
    if was_numpy:
        box = BoxCounts(**{k: v.cpu().numpy() for k, v in vars(box).items()})
        return d_b.cpu().numpy(), box
    return d_b, box


# ----------------------------------------------------------------------------- power laws
@dataclass
class PowerLawFit:
    """Result of :func:`powerlaw_fit`; every field has the leading shape of ``values``.

    Attributes
    ----------
    alpha : MLE exponent of ``p(x) ~ x^-alpha`` for ``x >= xmin``.
    xmin : lower bound of the power-law tail.
    ks : Kolmogorov-Smirnov distance between the tail and the fitted law.
    sigma : standard error of alpha, ``(alpha - 1) / sqrt(n_tail)``.
    n_tail : number of samples ``>= xmin``.
    p_value : bootstrap goodness-of-fit p-value (fraction of synthetic sets with a larger KS);
        ``None`` when ``bootstrap == 0``. CSN 2009 rule of thumb: p <= 0.1 rules out a power law.
    """

    alpha: Any
    xmin: Any
    ks: Any
    sigma: Any
    n_tail: Any
    p_value: Any = None


def _fit_tail(x: torch.Tensor, discrete: bool, xmin: Optional[float], min_tail: int):
    """Fit one sorted 1-D float64 sample: returns (alpha, xmin, ks, n_tail) as Python numbers."""
    n = x.numel()
    logs = torch.log(x)
    suffix = torch.flip(torch.cumsum(torch.flip(logs, [0]), 0), [0])  # sum_{j >= i} ln x_j
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = x[1:] != x[:-1]
    cand = torch.nonzero(first).squeeze(-1)
    if xmin is not None:
        cand = torch.searchsorted(x, torch.tensor([xmin], dtype=x.dtype))
    cand = cand[(n - cand) >= min_tail]
    if cand.numel() == 0:
        return None
    n_tail = (n - cand).to(x.dtype)
    xm = x[cand] if xmin is None else torch.full_like(n_tail, xmin)
    shift = xm - 0.5 if discrete else xm
    alpha = 1.0 + n_tail / (suffix[cand] - n_tail * torch.log(shift))
    best = (math.inf, None)
    # KS per candidate in chunks so memory stays O(chunk * n).
    last_of_run = torch.searchsorted(x, x, right=True) - 1
    chunk = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, cand.numel(), chunk):
        c, a_, xm_ = cand[lo:lo + chunk], alpha[lo:lo + chunk], xm[lo:lo + chunk]
        j = torch.arange(n)
        in_tail = j.unsqueeze(0) >= c.unsqueeze(1)
        nt = (n - c).to(x.dtype).unsqueeze(1)
        if discrete:
            from scipy.special import zeta

            z0 = torch.from_numpy(zeta(a_.numpy(), xm_.numpy())).unsqueeze(1)
            xs = x.unsqueeze(0).expand(c.numel(), n)
            model = 1.0 - torch.from_numpy(zeta(a_.unsqueeze(1).expand_as(xs).numpy(), (xs + 1).numpy())) / z0
            emp = (last_of_run.unsqueeze(0) - c.unsqueeze(1) + 1).to(x.dtype) / nt
            d = torch.where(in_tail, (emp - model).abs(), 0.0).amax(1)
        else:
            model = 1.0 - (x.unsqueeze(0) / xm_.unsqueeze(1)) ** (1.0 - a_.unsqueeze(1))
            rank = (j.unsqueeze(0) - c.unsqueeze(1)).to(x.dtype)
            d_hi = torch.where(in_tail, (rank + 1) / nt - model, -math.inf).amax(1)
            d_lo = torch.where(in_tail, model - rank / nt, -math.inf).amax(1)
            d = torch.maximum(d_hi, d_lo)
        k = int(torch.argmin(d))
        if float(d[k]) < best[0]:
            best = (float(d[k]), lo + k)
    i = best[1]
    return float(alpha[i]), float(xm[i]), best[0], int(n_tail[i])


def _sample_like(x: torch.Tensor, alpha: float, xmin: float, n_tail: int, discrete: bool, gen: torch.Generator):
    """CSN 2009 semi-parametric bootstrap set: tail from the fitted law, body resampled."""
    n = x.numel()
    from_tail = torch.rand(n, generator=gen, dtype=torch.float64) < n_tail / n
    body = x[x < xmin]
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    if discrete:
        tail = torch.floor((xmin - 0.5) * (1 - u) ** (-1.0 / (alpha - 1.0)) + 0.5)
    else:
        tail = xmin * (1 - u) ** (-1.0 / (alpha - 1.0))
    if body.numel():
        pick = body[torch.randint(body.numel(), (n,), generator=gen)]
        out = torch.where(from_tail, tail, pick)
    else:
        out = tail
    return torch.sort(out).values


def powerlaw_fit(values, xmin: Optional[float] = None, discrete: bool = False, bootstrap: int = 0,
                 generator: Optional[torch.Generator] = None, *, min_tail: int = 10) -> PowerLawFit:
    """Power-law tail fit of Clauset, Shalizi & Newman (2009).

    For every candidate x_min (each distinct value leaving at least ``min_tail`` samples above)
    the exponent is the MLE ``alpha = 1 + n / sum ln(x_i / x_min)`` (continuous) or the discrete
    approximation ``1 + n / sum ln(x_i / (x_min - 1/2))`` (CSN eq. 3.7, good for x_min >~ 6); the
    x_min kept minimises the KS distance between the tail and the fitted law (Hurwitz-zeta CDF
    for discrete data). ``bootstrap > 0`` adds the CSN goodness-of-fit p-value: synthetic sets
    drawn from the fit (body resampled from the data below x_min) are refitted the same way.

    Parameters
    ----------
    values : torch.Tensor or np.ndarray
        ``(..., n)`` positive samples (e.g. node degrees or weights); each leading index is fit
        separately.
    xmin : float, optional
        Fix x_min instead of searching for it.
    discrete : bool
        Integer data (>= 1), e.g. degrees.
    bootstrap : int
        Number of synthetic sets for the p-value (CSN use 2500 for +/- 0.01; 0 skips it).
    generator : torch.Generator, optional
        Random source for the bootstrap; default a generator seeded with 0 (deterministic).
    min_tail : int
        Fewest tail samples a candidate x_min may leave.

    Returns
    -------
    PowerLawFit
        Fields of shape ``(...)``: tensors for torch input, NumPy arrays for NumPy input.

    Shape:
        ``(..., n) -> (...)``. Runs on the CPU in float64 (one Python loop per series; the
        candidate search is vectorised). Measured on Pareto samples (alpha = 2.5, n = 2000,
        x_min = 1, 40 seeds): alpha bias +0.005, sd 0.06. On a mixture (400 uniform values on
        [1, 5) below 1000 Pareto values from 5, 20 seeds) the KS search picks x_min >= 5 or just
        below (median 5.5; larger x_min are also power laws, CSN's known tendency), alpha bias
        +0.02, sd 0.07.
    """
    t, was_numpy = as_tensor(values, "values")
    if t.ndim < 1:
        raise ValueError("values: needs at least one dimension (..., n)")
    check_finite(t, "values")
    if bool((t <= 0).any()):
        raise ValueError(f"values: must all be > 0 for a power law, got minimum {float(t.min())}; drop zeros (e.g. isolated nodes)")
    if discrete and not bool((t == t.round()).all()):
        raise ValueError("values: discrete=True needs integer values >= 1; pass discrete=False for continuous data")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ValueError(f"bootstrap: must be an integer >= 0, got {bootstrap!r}")
    if isinstance(min_tail, bool) or not isinstance(min_tail, (int, np.integer)) or min_tail < 2:
        raise ValueError(f"min_tail: must be an integer >= 2, got {min_tail!r}")
    if xmin is not None and not (isinstance(xmin, (int, float)) and xmin > 0 and math.isfinite(xmin)):
        raise ValueError(f"xmin: must be a finite number > 0 or None, got {xmin!r}")
    if discrete and xmin is not None and xmin < 1:
        raise ValueError(f"xmin: discrete fits need xmin >= 1, got {xmin!r}")
    if t.shape[-1] < min_tail:
        raise ValueError(f"values: needs at least min_tail={min_tail} samples on the last axis, got {t.shape[-1]}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    flat = t.detach().to("cpu", torch.float64).reshape(-1, t.shape[-1])
    out = {k: [] for k in ("alpha", "xmin", "ks", "sigma", "n_tail", "p_value")}
    for row_idx, row in enumerate(flat):
        x = torch.sort(row).values
        res = _fit_tail(x, discrete, xmin, min_tail)
        if res is None:
            raise ValueError(
                f"xmin: {xmin!r} leaves fewer than min_tail={min_tail} samples in series {row_idx}; lower xmin or min_tail"
            )
        alpha, xm, ks, n_tail = res
        if not math.isfinite(alpha) or alpha <= 1:
            raise ValueError(f"values: series {row_idx} has no usable tail (alpha={alpha}); is it constant?")
        out["alpha"].append(alpha), out["xmin"].append(xm), out["ks"].append(ks), out["n_tail"].append(n_tail)
        out["sigma"].append((alpha - 1.0) / math.sqrt(n_tail))
        if bootstrap:
            hits = 0
            for _ in range(int(bootstrap)):
                synth = _sample_like(x, alpha, xm, n_tail, discrete, gen)
                r = _fit_tail(synth, discrete, xmin, min_tail)
                hits += r is not None and r[2] >= ks
            out["p_value"].append(hits / bootstrap)
    shape = t.shape[:-1]

    def pack(vals, dtype=t.dtype):  # float fields in the input's precision
        tt = torch.tensor(vals, dtype=dtype).reshape(shape)
        return tt.numpy() if was_numpy else tt.to(t.device)

    return PowerLawFit(
        alpha=pack(out["alpha"]), xmin=pack(out["xmin"]), ks=pack(out["ks"]), sigma=pack(out["sigma"]),
        n_tail=pack(out["n_tail"], torch.long), p_value=pack(out["p_value"]) if bootstrap else None,
    )
