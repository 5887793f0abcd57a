"""Review of today's changes to fractals/ and models/ (session 8): bugs a user hits, each pinned by a test."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from models.data.batch import collate_batch

torch.set_num_threads(1)


def test_collate_takes_flipped_and_read_only_numpy_samples():
    # Numeric numpy arrays become tensors (today's collate), but a time-reversed window (negative strides) or a
    # big-endian one was refused as "samples mix tensors and ['ndarray'] that do not convert", and a read-only
    # one (np.load with mmap_mode='r') warned "The given NumPy array is not writable" at every batch.
    a = np.arange(120, dtype=np.float64).reshape(3, 40)
    batch = collate_batch([{"lfp": a[:, ::-1], "subject": 0}, {"lfp": a, "subject": 1}])
    assert batch["lfp"].shape == (2, 3, 40)
    assert batch["lfp"][0, 0, 0] == 39.0 and batch["lfp"][1, 0, 0] == 0.0
    ro = a.copy()
    ro.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = collate_batch([{"lfp": ro}, {"lfp": ro}])
    assert torch.equal(batch["lfp"][1], torch.from_numpy(a))
    assert not ro.flags.writeable and a[0, 0] == 0.0  # the caller's arrays are untouched
    big = a.astype(">f8")  # big-endian samples (np.frombuffer of a big-endian file format)
    batch = collate_batch([{"lfp": big}, {"lfp": big}])
    assert batch["lfp"].dtype == torch.float64 and torch.equal(batch["lfp"][0], torch.from_numpy(a))
