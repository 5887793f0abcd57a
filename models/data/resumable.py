"""A train loader that resumes inside an epoch: Lightning saves its ``state_dict`` in checkpoints.

Lightning's fit loop stores ``state_dict()`` of every train loader that has ``state_dict`` and
``load_state_dict`` and hands it back before the first batch of a resumed fit. The order of
:class:`ResumableSampler` depends only on ``(seed, epoch)`` (a :class:`DistributedSampler`, so each
DDP rank draws its own shard and Lightning leaves it in place), so a restored loader can skip the
batches the interrupted run already trained on and yield exactly the ones it had left.

The number of consumed batches is the trainer's processed-batch count when the loader is given a
``progress`` callable: Lightning fetches batches ahead of the step (and workers prefetch more), so
counting what the loader has yielded would skip batches that were fetched but never trained on.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, Iterator, Optional

from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["ResumableSampler", "ResumableDataLoader"]

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """Seeded shuffle of one rank's shard whose next pass can start part-way.

    Parameters
    ----------
    dataset : Dataset
        Map-style dataset (``len`` known).
    num_replicas, rank : int
        Number of processes and this one's rank (``1, 0`` for one process).
    seed : int
        Permutation seed; epoch ``e`` uses ``seed + e`` as in :class:`DistributedSampler`.
    shuffle, drop_last : bool
        As in :class:`DistributedSampler`.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self._skip = 0

    def skip_next(self, n_samples: int) -> None:
        """Leave out the first ``n_samples`` indices of the next pass only."""
        self._skip = max(0, int(n_samples))

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return itertools.islice(super().__iter__(), skip, None)


class ResumableDataLoader(DataLoader):
    """A :class:`DataLoader` over a :class:`ResumableSampler` with ``state_dict``/``load_state_dict``.

    Parameters
    ----------
    dataset : Dataset
        Map-style dataset.
    progress : callable, optional
        Returns ``(done, total)``: the batches of the current epoch already trained on and the epoch's
        length (``None`` outside training); the datamodule passes the trainer's counts. Without it the
        loader counts the batches it yielded against ``len(self)``.
    **kwargs
        :class:`DataLoader` arguments; ``sampler`` should be a :class:`ResumableSampler`.
    """

    def __init__(self, dataset: Dataset, *, progress: Optional[Callable[[], Optional[tuple[int, int]]]] = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self._progress = progress
        self._start = 0  # batches skipped at the start of the current pass
        self._yielded = 0
        self._resume: Optional[tuple[int, int]] = None  # (epoch, batches done) from load_state_dict

    def __iter__(self):
        start = 0
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            if isinstance(self.sampler, ResumableSampler) and self.sampler.epoch == epoch and done > 0:
                start = done
                self.sampler.skip_next(done * int(self.batch_size or 1))
        self._start, self._yielded = start, 0
        return self._count(super().__iter__())

    def _count(self, batches) -> Iterator[Any]:
        for batch in batches:
            self._yielded += 1
            yield batch

    def _done(self) -> tuple[int, int]:
        counts = self._progress() if self._progress is not None else None
        if counts is None:
            return self._start + self._yielded, len(self)
        return int(counts[0]), int(counts[1])

    def state_dict(self) -> dict[str, Any]:
        """Where the current epoch stands: ``epoch``, ``batches`` done, and the layout they assume."""
        sampler = self.sampler
        if not isinstance(sampler, ResumableSampler):
            return {"resumable": False}
        epoch, (done, total) = int(sampler.epoch), self._done()
        if done >= total:  # an epoch's last batch: the next pass is the next epoch from its start
            epoch, done = epoch + 1, 0
        return {"resumable": True, "epoch": epoch, "batches": done, "seed": int(sampler.seed),
                "num_replicas": int(sampler.num_replicas), "batch_size": int(self.batch_size or 1),
                "n_samples": len(sampler.dataset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Make the next pass start after the batches ``state`` says were done."""
        sampler = self.sampler
        if not state.get("resumable") or not isinstance(sampler, ResumableSampler):
            log.warning("train loader: the checkpoint holds no loader position; this epoch restarts from its "
                        "first batch")
            return
        now = {"seed": int(sampler.seed), "num_replicas": int(sampler.num_replicas),
               "batch_size": int(self.batch_size or 1), "n_samples": len(sampler.dataset)}
        changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
        sampler.set_epoch(int(state["epoch"]))
        if changed:
            log.warning("train loader: %s changed since the checkpoint (saved, now), so its %d done batch(es) of "
                        "epoch %d cannot be skipped: this epoch restarts from its first batch. Resume with the "
                        "same data, seed, batch size and number of processes to continue where it stopped.",
                        changed, int(state["batches"]), int(state["epoch"]))
            return
        self._resume = (int(state["epoch"]), int(state["batches"]))
