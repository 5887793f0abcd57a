"""Byte data from any folder of files: concatenated, split, cut into random training windows."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from models._config_options import _int_option, _is_real, _is_whole
from models.byte.tokenizer import EOS


def read_corpus(path: str | Path, *, max_bytes: int | None = None) -> torch.Tensor:
    """All files under ``path`` (sorted, recursively; or one file), joined by EOS, as a long tensor."""
    # A negative cap sliced bytes off the end (ids[:-5]) and stopped after the first file; 1 left
    # a single byte that failed later without naming the option.
    if max_bytes is not None and not _is_whole(max_bytes, 2):  # "abc" failed in int() naming no option
        raise ValueError(f"data.max_bytes: must be an integer >= 2 (bytes of corpus to read) or null for all, got {max_bytes!r}")
    max_bytes = None if max_bytes is None else int(max_bytes)
    p = Path(path)
    if not p.exists():
        raise ValueError(f"data.path: {str(p)!r} does not exist; point it at a file or a folder of files")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    # Byte arrays (int16 holds the 259 ids), not a Python list of ints: extending a list cost
    # ~0.3 us per corpus byte (16 MB took 4.6 s, a GB minutes per trial) and more peak memory.
    parts: list[np.ndarray] = []
    total = 0
    eos = np.array([EOS], dtype=np.int16)
    for f in files:
        # Only the bytes still under the cap: reading whole files first made max_bytes=1e6 on a 20 GB dump
        # load (and widen to int16) all 20 GB before slicing.
        with open(f, "rb") as fh:
            data = np.frombuffer(fh.read(max_bytes - total if max_bytes else -1), dtype=np.uint8)
        parts += [data.astype(np.int16), eos]
        total += data.size + 1
        if max_bytes and total >= max_bytes:
            break
    joined = np.concatenate(parts) if parts else np.empty(0, dtype=np.int16)
    del parts
    out = torch.from_numpy(joined[:max_bytes] if max_bytes else joined).long()
    # One byte gives windows whose only target is EOS: val/bpb had no byte to score and read 0.0.
    n_real = int((out < 256).sum())
    if n_real < 2:
        cap = f" in its first data.max_bytes={max_bytes}" if max_bytes else ""
        raise ValueError(f"data.path: {str(p)!r} holds {n_real} byte(s){cap}; needs at least 2 bytes to train on and score")
    return out


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
        if not (_is_real(val_fraction, 0.0, open_low=True) and float(val_fraction) < 1):
            raise ValueError(f"data.val_fraction: must lie in (0, 1), got {val_fraction!r}")
        val_fraction = float(val_fraction)
        if seq_len < 1:  # 0 gave empty windows and a NaN loss
            raise ValueError(f"data.seq_len: must be >= 1 (bytes of context per window), got {seq_len}")
        if windows_per_epoch < 1:
            raise ValueError(f"data.windows_per_epoch: must be >= 1, got {windows_per_epoch}")
        self.path, self.seq_len, self.batch_size = path, seq_len, batch_size
        self.windows, self.val_fraction, self.seed, self.max_bytes = windows_per_epoch, val_fraction, seed, max_bytes

    def setup(self, stage: str | None = None) -> None:
        ids = read_corpus(self.path, max_bytes=self.max_bytes)
        # Empty files at the end add only EOS after EOS, and made a held-out tail without a byte to score:
        # every val batch weighed 0 real bytes and val/bpb read NaN. Keep one EOS after the last byte, so
        # the tail below always ends in a byte and its EOS.
        ids = ids[: int((ids < 256).nonzero()[-1]) + 2]
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
    # int() read seq_len 2.5 as 2 (and max_bytes 2.5 past its own check) and failed on "abc" naming no option;
    # batch_size 0 failed in the DataLoader.
    from_data = d.get("batch_size") is not None  # 0 fell through to trainer.batch_size without a word
    batch_size = d["batch_size"] if from_data else (cfg.get("trainer", {}) or {}).get("batch_size", 16)
    return ByteDataModule(
        path=d["path"], seq_len=_int_option(d.get("seq_len", 128), "data.seq_len", 1),
        batch_size=_int_option(batch_size, "data.batch_size" if from_data else "trainer.batch_size", 1),
        windows_per_epoch=_int_option(d.get("windows_per_epoch", 256), "data.windows_per_epoch", 1),
        val_fraction=d.get("val_fraction", 0.1), seed=int(cfg.get("seed", 0)),
        max_bytes=d.get("max_bytes"),  # checked by read_corpus
    )
