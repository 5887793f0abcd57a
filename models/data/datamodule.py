"""LightningDataModules for NeuroFMx: ``synthetic`` (default) and ``files`` (a folder of recordings).

:func:`build_datamodule` is the builder named in :mod:`models.registry` for ``data.name`` in
``{"synthetic", "files"}``. Both datasets are plain map-style datasets and each sample is
deterministic given the seed. The train loader is a :class:`~models.data.resumable.ResumableDataLoader`:
its shuffle depends only on ``(seed, epoch)``, each DDP rank draws its own shard, and a fit resumed
from a checkpoint saved inside an epoch continues with the batches that epoch had left.

Batch size comes from ``data.batch_size`` when set, else ``trainer.batch_size`` (per worker).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from models.data.batch import collate_batch
from models.data.files import _count
from models.data.resumable import ResumableDataLoader, ResumableSampler
from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset

__all__ = ["NeuroDataModule", "build_datamodule"]


class NeuroDataModule(pl.LightningDataModule):
    """Train/val(/test) datasets wrapped in DataLoaders that produce :mod:`models.data.batch` dicts.

    Parameters
    ----------
    train, val : Dataset
        Map-style datasets of sample dicts.
    test : Dataset, optional
        Held-out split (defaults to none).
    batch_size : int
        Samples per batch per process.
    num_workers : int
        DataLoader worker processes (0 = load in the training process; enough for synthetic data).
    info : mapping
        Facts about the data the model config may need (``fs``, ``n_time``, vocabularies...).
    seed : int
        Seed of the train shuffle (epoch ``e`` draws permutation ``seed + e``).

    Shape:
        Each batch: dict per :mod:`models.data.batch`.
    """

    def __init__(self, *, train: Dataset, val: Dataset, test: Optional[Dataset] = None, batch_size: int = 8,
                 num_workers: int = 0, info: Optional[Mapping[str, Any]] = None, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size: must be an integer >= 1, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"data.num_workers: must be an integer >= 0, got {num_workers!r}")
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.num_workers = batch_size, num_workers
        self.info = dict(info or {})
        self.seed = int(seed)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        world = int(trainer.world_size) if trainer is not None else 1
        if not shuffle and 1 < world <= len(dataset):
            # Lightning's DistributedSampler pads every rank's share to the same length by repeating samples, so
            # the global val/* means counted up to world - 1 samples twice (5 samples, 2 ranks: 6 scored). Each
            # sample once instead; the ranks' batch counts may then differ by one, which validation allows (no
            # per-batch collective: the means are reduced once at epoch end), as long as every rank has one.
            from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=int(trainer.global_rank),
                                                   shuffle=False)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
            num_workers=self.num_workers, collate_fn=collate_batch, persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)
        sampler = ResumableSampler(self.train_set, num_replicas=world, rank=rank, seed=self.seed, shuffle=True)
        return ResumableDataLoader(
            self.train_set, progress=self._train_batches_done, sampler=sampler, batch_size=self.batch_size,
            num_workers=self.num_workers, collate_fn=collate_batch, persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def _train_batches_done(self) -> Optional[tuple[int, int]]:
        """Batches of the current epoch the fit has trained on, and the epoch's length (``limit_train_batches``
        counted); ``None`` outside ``trainer.fit``."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit" or not isinstance(trainer.num_training_batches, int):
            return None
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed), trainer.num_training_batches

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("test_dataloader: this datamodule has no test split (the synthetic dataset makes one "
                             "with data.n_test > 0; the files dataset has train and validation only)")
        return self._loader(self.test_set, shuffle=False)


def _batch_size(cfg: Mapping[str, Any]) -> int:
    trainer = _count(cfg.get("trainer", {}) or {}, "batch_size", 8, 1, "samples per batch per worker",
                     prefix="trainer")
    return _count(cfg.get("data", {}) or {}, "batch_size", trainer, 1, "null = trainer.batch_size")


_LOADER_KEYS = {"name", "n_train", "n_val", "n_test", "batch_size", "num_workers"}


def _synthetic(cfg: Mapping[str, Any]) -> NeuroDataModule:
    data = dict(cfg.get("data", {}) or {})
    known = _LOADER_KEYS | {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"data: unknown key(s) {unknown} for the synthetic dataset; known: {sorted(known)}")
    if data.get("seed") is None:
        data["seed"] = int(cfg.get("seed", 0) or 0)
    gen = SyntheticConfig.from_mapping(data)
    n_train, n_val, n_test = (_count(data, k, d, least, "samples in the split")
                              for k, d, least in (("n_train", 64, 1), ("n_val", 16, 1), ("n_test", 0, 0)))
    train = SyntheticNeuralDataset(n_samples=n_train, split="train", config=gen)
    val = SyntheticNeuralDataset(n_samples=n_val, split="val", config=gen)
    test = SyntheticNeuralDataset(n_samples=n_test, split="test", config=gen) if n_test > 0 else None
    info = {"fs": gen.fs, "n_time": gen.n_time, "modalities": list(gen.modalities), "n_unit_ids": train.n_unit_ids,
            "n_lfp_channels": gen.n_lfp_channels, "n_behavior": gen.n_behavior, "n_subjects": gen.n_subjects}
    return NeuroDataModule(train=train, val=val, test=test, batch_size=_batch_size(cfg),
                           num_workers=_count(data, "num_workers", 0, 0, "loader processes"), info=info,
                           seed=gen.seed)


def build_datamodule(cfg: Mapping[str, Any]) -> NeuroDataModule:
    """Build the datamodule named by ``cfg['data']['name']`` (``synthetic`` or ``files``).

    ``cfg`` is the composed Hydra config as a plain dict (see platform/fmx/conf/data/*.yaml).
    """
    name = (cfg.get("data", {}) or {}).get("name", "synthetic")
    if name == "synthetic":
        return _synthetic(cfg)
    if name == "files":
        from models.data.files import build_files_datamodule

        return build_files_datamodule(cfg, NeuroDataModule, _batch_size(cfg))
    raise ValueError(f"data.name: {name!r} is not built here; use 'synthetic' or 'files'")
