"""fMRI ROI time series (atlas parcels) -> per-ROI time-patch tokens."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from models.tokenizers.base import ChannelPatchTokenizer, Tokens

__all__ = ["FMRITokenizer"]


class FMRITokenizer(nn.Module):
    """Tokenize ``(B, T, R)`` ROI series with atlas-parcel identity embeddings.

    ROI ids are the parcel numbers of one atlas (``fmri_roi_ids``; default the ROI position), so a
    parcel keeps its identity across subjects; the BOLD signal is z-scored per ROI by running
    (causal) statistics. fMRI is slow (TR ~ 1 s), so a ``patch_size`` of 1-2 volumes is typical.

    Parameters
    ----------
    d_model, patch_size : int
        Token width and volumes per token.
    n_rois : int
        Atlas size (e.g. 400 for Schaefer-400).
    layout : {"channel_patch", "time_mix"}
        Token layout, see :mod:`models.tokenizers.base`.
    dropout : float
        Token dropout.

    Shape:
        - fmri: ``(B, T, R)``; mask ``(B, R)`` bool; roi_ids ``(B, R)`` long
        - output :class:`~models.tokenizers.base.Tokens`: ``(B, R * ceil(T / P), D)`` ROI-major
          (``channel_patch``) or ``(B, ceil(T / P), D)`` (``time_mix``)
    """

    batch_key = "fmri"

    def __init__(
        self, *, d_model: int, patch_size: int, n_rois: int = 400, layout: str = "channel_patch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = ChannelPatchTokenizer(
            d_model=d_model, patch_size=patch_size, n_channel_ids=n_rois, layout=layout,
            normalize="causal_zscore", dropout=dropout, vocab_option="n_rois",
        )

    def forward(self, fmri: Tensor, *, mask: Optional[Tensor] = None, roi_ids: Optional[Tensor] = None) -> Tokens:
        if not isinstance(fmri, Tensor) or fmri.ndim != 3:
            raise ValueError(f"fmri: needs a tensor (B, T, R), got {tuple(fmri.shape) if isinstance(fmri, Tensor) else type(fmri).__name__}")
        return self.embed(fmri.transpose(1, 2), mask=mask, ids=roi_ids, name="fmri", ids_name="fmri_roi_ids")

    def from_batch(self, batch: dict) -> Tokens:
        return self(batch["fmri"], mask=batch.get("fmri_mask"), roi_ids=batch.get("fmri_roi_ids"))
