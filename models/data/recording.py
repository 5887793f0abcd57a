"""The one in-memory type every reader returns: :class:`Recording` (continuous signal or event intervals)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Recording"]


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recording: a multichannel continuous signal or an event-interval series.

    Shape:
        ``data``: ``(channels, time)`` float64 when ``kind == "continuous"``;
        ``(n_intervals,)`` float64 in milliseconds when ``kind == "intervals"``.
    """

    data: np.ndarray
    fs: float
    channel_names: tuple[str, ...]
    kind: str = "continuous"
    units: str = "V"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.meta.get("path", "<memory>")
        if self.kind not in ("continuous", "intervals"):
            raise ValueError(f"kind: must be 'continuous' or 'intervals', got {self.kind!r} ({src})")
        want_ndim = 2 if self.kind == "continuous" else 1
        if self.data.ndim != want_ndim:
            raise ValueError(
                f"data: a {self.kind} recording needs {want_ndim} dimension(s), got shape {self.data.shape} ({src})"
            )
        if not (np.isfinite(self.fs) and self.fs > 0):
            raise ValueError(f"fs: must be a finite rate > 0 Hz, got {self.fs!r} ({src})")
        n_ch = self.data.shape[0] if self.kind == "continuous" else 1
        if len(self.channel_names) != n_ch:
            raise ValueError(
                f"channel_names: {len(self.channel_names)} names for {n_ch} channel(s) ({src}); give one per row"
            )

    @property
    def n_channels(self) -> int:
        return self.data.shape[0] if self.kind == "continuous" else 1

    @property
    def duration_s(self) -> float:
        if self.kind == "intervals":
            return float(self.data.sum()) / 1000.0
        return self.data.shape[-1] / self.fs

    def replace(self, **changes: Any) -> "Recording":
        """A copy with some fields changed (``meta`` is merged, not replaced)."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return dataclasses.replace(self, **changes)
