"""Byte data from any folder of files: concatenated, split, cut into random training windows."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models.byte.tokenizer import EOS


def read_corpus(path: str | Path, *, max_bytes: int | None = None) -> torch.Tensor:
    """All files under ``path`` (sorted, recursively; or one file), joined by EOS, as a long tensor."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"data.path: {str(p)!r} does not exist; point it at a file or a folder of files")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    ids: list[int] = []
    for f in files:
        ids.extend(f.read_bytes())
        ids.append(EOS)
        if max_bytes and len(ids) >= max_bytes:
            break
    if len(ids) < 2:
        raise ValueError(f"data.path: {str(p)!r} holds no bytes to train on")
    return torch.tensor(ids[:max_bytes] if max_bytes else ids, dtype=torch.long)


class ByteWindows(Dataset):
    """Fixed windows of ``seq_len + 1`` bytes (input and shifted target), ``n`` per epoch.

    Window starts are drawn once from a seeded generator, so epochs and DDP ranks see a fixed,
    map-style dataset.
    """

    def __init__(self, ids: torch.Tensor, *, seq_len: int, n: int, seed: int) -> None:
        if ids.numel() < 2:
            raise ValueError("ids: needs at least 2 bytes")
        self.ids, self.seq_len = ids, min(seq_len, ids.numel() - 1)
        g = torch.Generator().manual_seed(seed)
        self.starts = torch.randint(0, ids.numel() - self.seq_len, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        chunk = self.ids[s : s + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


class ByteDataModule(pl.LightningDataModule):
    def __init__(self, *, path: str, seq_len: int = 128, batch_size: int = 16, windows_per_epoch: int = 256,
                 val_fraction: float = 0.1, seed: int = 0, max_bytes: int | None = None) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction: must lie in (0, 1), got {val_fraction}")
        if seq_len < 1:  # 0 gave empty windows and a NaN loss
            raise ValueError(f"data.seq_len: must be >= 1 (bytes of context per window), got {seq_len}")
        if windows_per_epoch < 1:
            raise ValueError(f"data.windows_per_epoch: must be >= 1, got {windows_per_epoch}")
        self.path, self.seq_len, self.batch_size = path, seq_len, batch_size
        self.windows, self.val_fraction, self.seed, self.max_bytes = windows_per_epoch, val_fraction, seed, max_bytes

    def setup(self, stage: str | None = None) -> None:
        ids = read_corpus(self.path, max_bytes=self.max_bytes)
        cut = max(2, int(ids.numel() * (1 - self.val_fraction)))
        train, val = ids[:cut], ids[cut - 1 :] if ids.numel() - cut >= 2 else ids
        self.train_set = ByteWindows(train, seq_len=self.seq_len, n=self.windows, seed=self.seed)
        self.val_set = ByteWindows(val, seq_len=self.seq_len, n=max(1, self.windows // 8), seed=self.seed + 1)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


def build_datamodule(cfg: Mapping[str, Any]) -> ByteDataModule:
    """Entry point for :mod:`models.registry` (``data.name: bytes``)."""
    d = dict(cfg.get("data", {}))
    if not d.get("path"):
        raise ValueError("data.path: required for data=bytes; give a file or a folder of files (data.path=/some/folder)")
    return ByteDataModule(
        path=d["path"], seq_len=int(d.get("seq_len", 128)),
        batch_size=int(d.get("batch_size") or cfg.get("trainer", {}).get("batch_size", 16)),
        windows_per_epoch=int(d.get("windows_per_epoch", 256)), val_fraction=float(d.get("val_fraction", 0.1)),
        seed=int(cfg.get("seed", 0)), max_bytes=d.get("max_bytes"),
    )
