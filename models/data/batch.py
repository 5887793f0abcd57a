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
in the batch and the padding is marked in the ``*_mask`` keys (created when a dataset omits them;
``behavior_mask`` when the samples' behaviour feature counts differ). The time axis is not padded:
the batch has no time mask, so samples of one batch need one length per modality.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["collate_batch", "CHANNEL_KEYS", "TIME_MAJOR_KEYS", "CHANNEL_AXIS", "mask_key"]

TIME_MAJOR_KEYS = ("spikes", "calcium", "fmri", "behavior")
CHANNEL_KEYS = ("spikes", "lfp", "eeg", "ecog", "ieeg", "emg", "calcium", "fmri")
# channel axis of one *sample* (no batch axis)
CHANNEL_AXIS = {k: (1 if k in TIME_MAJOR_KEYS else 0) for k in CHANNEL_KEYS}
# time axis of one sample: zero-padding it would hand the losses padded samples as real ones (no time mask)
_TIME_AXIS = {**{k: (0 if k in TIME_MAJOR_KEYS else 1) for k in CHANNEL_KEYS}, "behavior": 0, "audio": 1, "video": 1}


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
    long tensor ``(B,)``; numeric numpy arrays (and numbers beside tensors) become tensors; anything else is
    kept as a list.
    """
    if not items:
        raise ValueError("items: cannot collate an empty list of samples")
    keys = list(items[0])
    for i, item in enumerate(items):
        if list(item) != keys and set(item) != set(keys):
            missing, extra = sorted(set(keys) - set(item)), sorted(set(item) - set(keys))
            raise ValueError(f"items[{i}]: keys {sorted(item)} differ from items[0] keys {sorted(keys)} (missing "
                             f"{missing}, extra {extra}); give every sample of a batch the same keys, e.g. a "
                             "modality a sample lacks as zeros with its <key>_mask all False")
    items = [dict(it) for it in items]
    for key in keys:
        values = [it[key] for it in items]
        arrays = any((isinstance(v, np.ndarray) and v.dtype.kind in "biufc") or isinstance(v, np.integer)
                     for v in values)
        if (arrays or any(isinstance(v, Tensor) for v in values)) and not all(isinstance(v, Tensor) for v in values):
            # A 0-d tensor label in one sample and an int in another failed as "'int' has no attribute 'ndim'";
            # numpy arrays (a dataset reading .npy files) became lists the model cannot read.
            try:
                for it in items:
                    v = it[key]
                    # A flipped window (negative strides) or big-endian data failed to convert and a read-only
                    # array (np.load with mmap_mode='r') warned at every batch: such arrays are copied (the batch
                    # copies anyway), in native byte order.
                    if isinstance(v, np.ndarray) and (not v.flags.writeable or any(s < 0 for s in v.strides)
                                                      or not v.dtype.isnative):
                        v = np.array(v, dtype=v.dtype.newbyteorder("="))
                    it[key] = torch.as_tensor(v)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ValueError(f"{key}: samples mix tensors and {sorted({type(v).__name__ for v in values})} "
                                 f"that do not convert to a tensor ({exc}); give it one type in every sample") from exc
    for key, axis in _TIME_AXIS.items():
        lengths = [it[key].shape[axis] for it in items if key in it and isinstance(it[key], Tensor)
                   and it[key].ndim > axis]
        if len(set(lengths)) > 1:
            raise ValueError(f"{key}: samples have different lengths {lengths} on the time axis (axis {axis} of a "
                             "sample); zero-padding them would score the padding as real data (a batch has no time "
                             "mask): crop or window every sample to one length")
    for key in ("audio", "video"):  # no mask at all: padded mel bands or frame borders would pass as real input
        shapes = [tuple(it[key].shape) for it in items if isinstance(it.get(key), Tensor)]
        if len(set(shapes)) > 1:
            raise ValueError(f"{key}: samples have different shapes {shapes}; {key} has no padding mask, so give "
                             "every sample one shape (same mel bands / frame size and length)")
    padded_features = "behavior" in keys and mask_key("behavior") not in keys and isinstance(
        items[0]["behavior"], Tensor) and len({it["behavior"].shape[-1] for it in items}) > 1
    for key in CHANNEL_KEYS + (("behavior",) if padded_features else ()):
        if key in keys and mask_key(key) not in keys:
            for it in items:
                n = it[key].shape[CHANNEL_AXIS.get(key, -1)]
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
