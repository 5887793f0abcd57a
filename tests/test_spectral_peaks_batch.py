"""The peak search of ``spectral_beta`` searches only the rows that still find peaks (``find_peaks``): rows of one
batch with different numbers of peaks must come out as each row does alone, gradients included."""
from __future__ import annotations

import torch

from fractals.spectral_peaks import find_peaks

F = 80
FREQS = torch.linspace(1.0, 40.0, F, dtype=torch.float64)
DF = float(FREQS[1] - FREQS[0])
OPTS = dict(threshold=2.5, min_height=0.1, max_n_peaks=6, mask_level=0.5)


def _residuals() -> torch.Tensor:
    """Rows with 0, 1, 2 and 3 clear Gaussian peaks on small noise, in a mixed order."""
    g = torch.Generator().manual_seed(3)
    centres = [[], [12.0], [8.0, 27.0], [6.0, 18.0, 33.0], [], [22.0]]
    rows = []
    for cs in centres:
        r = 0.03 * torch.randn(F, generator=g, dtype=torch.float64)
        for c in cs:
            r = r + 0.6 * torch.exp(-0.5 * ((FREQS - c) / 1.2) ** 2)
        rows.append(r)
    return torch.stack(rows)


def _search(resid):
    return find_peaks(resid, torch.ones_like(resid, dtype=torch.bool), FREQS, DF, OPTS["threshold"],
                      OPTS["min_height"], OPTS["max_n_peaks"], OPTS["mask_level"])


def test_rows_with_different_peak_counts_match_each_row_alone():
    resid = _residuals()
    batch = _search(resid)
    assert batch[-1].sum(-1).tolist() == [0, 1, 2, 3, 0, 1]  # valid peaks per row: the rows differ
    for i in range(resid.shape[0]):
        alone = _search(resid[i:i + 1])
        for name, b, a in zip(("mask", "model", "freq", "height", "fwhm", "valid"), batch, alone):
            assert torch.allclose(b[i], a[0], rtol=1e-12, atol=1e-12), (i, name, b[i], a[0])
    found = batch[2][batch[-1]].sort().values
    assert torch.allclose(found, torch.tensor([6.0, 8.0, 12.0, 18.0, 22.0, 27.0, 33.0], dtype=torch.float64),
                          atol=0.3), found


def test_gradient_reaches_only_rows_with_peaks():
    resid = _residuals().requires_grad_(True)
    mask, model, freq, height, fwhm, valid = _search(resid)
    (model.sum() + height.sum() + fwhm.sum() + freq.sum()).backward()
    per_row = resid.grad.abs().sum(-1)
    assert torch.isfinite(resid.grad).all()
    assert (per_row[[1, 2, 3, 5]] > 0).all() and (per_row[[0, 4]] == 0).all(), per_row
    # leading axes are kept
    out = _search(_residuals().reshape(2, 3, F))
    assert out[0].shape == (2, 3, F) and out[2].shape == (2, 3, 6)
