"""Datasets for NeuroFMx: the batch layout, a synthetic generator with ground truth, file datasets.

- :mod:`models.data.batch`: the batch dict (keys, shapes) and :func:`collate_batch`
- :mod:`models.data.synthetic`: :class:`SyntheticNeuralDataset` (default dataset)
- :mod:`models.data.files`: windows of recordings read by :mod:`models.data.readers`
- :mod:`models.data.datamodule`: :func:`build_datamodule` (LightningDataModule by ``data.name``)
"""
from models.data.batch import collate_batch
from models.data.synthetic import SyntheticConfig, SyntheticNeuralDataset

__all__ = ["collate_batch", "SyntheticConfig", "SyntheticNeuralDataset"]
