"""The batch dict every NeuroFMx dataset produces, and the collate function that builds it.

A batch is a ``dict`` of tensors; every modality key is optional (a batch carries whichever
modalities its dataset has). ``B`` batch, ``T`` samples on the common time axis, ``U`` units,
``C`` channels.

=========================================  ==============================  ======================================
key                                        shape / type                    meaning
=========================================  ==============================  ======================================
``spikes``                                 ``(B, T, U)`` float             binned spike counts
``spikes_mask``                            ``(B, U)`` bool                 True = real unit (False = padding)
``unit_ids``                               ``(B, U)`` long                 unit identity (embedding index)
``lfp`` ``eeg`` ``ecog`` ``ieeg`` ``emg``  ``(B, C, T)`` float             continuous signals (any units)
``<key>_mask``                             ``(B, C)`` bool                 True = real channel
``<key>_channel_ids``                      ``(B, C)`` long, optional       channel identity (montage index)
``calcium`` / ``calcium_mask``             ``(B, T, N)`` / ``(B, N)``      calcium traces; ``calcium_ids`` optional
``fmri`` / ``fmri_mask``                   ``(B, T, R)`` / ``(B, R)``      ROI series; ``fmri_roi_ids`` optional
``behavior``                               ``(B, T, F)`` float             kinematics / flattened keypoints
``audio``                                  ``(B, n_mels, T_a)`` float      log-mel spectrogram
``video``                                  ``(B, 3, T_v, H, W)`` float     camera frames
``subject`` / ``species``                  ``(B,)`` long                   domain labels (adversarial head)
``stimulus``                               ``(B, D_s)`` float, optional    stimulus embedding (contrastive head)
``stimulus_id``                            ``(B,)`` long, optional         stimulus class (synthetic data)
``drives``                                 ``(B, T, K)`` float, optional   synthetic ground-truth latent drives
``fs``                                     python float                    sample rate of the common time axis (Hz)
=========================================  ==============================  ======================================

Samples with different channel/unit counts are padded by :func:`collate_batch` to the largest count
in the batch and the padding is marked in the ``*_mask`` keys (created when a dataset omits them).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["collate_batch", "CHANNEL_KEYS", "TIME_MAJOR_KEYS", "CHANNEL_AXIS", "mask_key"]

TIME_MAJOR_KEYS = ("spikes", "calcium", "fmri", "behavior")
CHANNEL_KEYS = ("spikes", "lfp", "eeg", "ecog", "ieeg", "emg", "calcium", "fmri")
# channel axis of one *sample* (no batch axis)
CHANNEL_AXIS = {k: (1 if k in TIME_MAJOR_KEYS else 0) for k in CHANNEL_KEYS}


def mask_key(key: str) -> str:
    return f"{key}_mask"


def _pad_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    if tuple(t.shape) == tuple(shape):
        return t
    out = t.new_zeros(shape)
    out[tuple(slice(0, n) for n in t.shape)] = t
    return out


def collate_batch(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch, padding channel/unit axes and adding masks where missing.

    Tensors of unequal shape are zero-padded (``False`` for bool masks) to the largest shape; python
    floats stay one float when equal across samples (``fs``), else a tensor; python ints become a
    long tensor ``(B,)``; anything else is kept as a list.
    """
    if not items:
        raise ValueError("items: cannot collate an empty list of samples")
    keys = list(items[0])
    for i, item in enumerate(items):
        if list(item) != keys and set(item) != set(keys):
            raise ValueError(f"items[{i}]: keys {sorted(item)} differ from items[0] keys {sorted(keys)}")
    items = [dict(it) for it in items]
    for key in CHANNEL_KEYS:
        if key in keys and mask_key(key) not in keys:
            for it in items:
                n = it[key].shape[CHANNEL_AXIS[key]]
                it[mask_key(key)] = torch.ones(n, dtype=torch.bool)
            keys.append(mask_key(key))
    batch: dict[str, Any] = {}
    for key in keys:
        values = [it[key] for it in items]
        if isinstance(values[0], Tensor):
            if len({v.ndim for v in values}) != 1:
                raise ValueError(f"{key}: samples have different numbers of dimensions {[v.ndim for v in values]}")
            shape = [max(s) for s in zip(*(v.shape for v in values))]
            batch[key] = torch.stack([_pad_to(v, shape) for v in values])
        elif isinstance(values[0], float):
            batch[key] = values[0] if all(v == values[0] for v in values) else torch.tensor(values)
        elif isinstance(values[0], int) and not isinstance(values[0], bool):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch
