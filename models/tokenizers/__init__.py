"""Modality tokenizers: each maps one batch modality to :class:`Tokens` of a shared width ``D``.

One module per modality (``spikes``, ``continuous`` for EEG/ECoG/iEEG/LFP/EMG, ``calcium``,
``fmri``, ``behavior``, ``audio``, ``video``), a common base (:mod:`models.tokenizers.base`) and
:class:`MultimodalTokenizer`, which tokenizes whatever modalities a batch carries and concatenates
them. Every tokenizer has ``forward(x, *, mask=..., ids=...)`` and ``from_batch(batch)``.
"""
from models.tokenizers.audio import AudioTokenizer
from models.tokenizers.base import ChannelPatchTokenizer, Tokens, sinusoidal_encoding, zscore_channels
from models.tokenizers.behavior import BehaviorTokenizer
from models.tokenizers.calcium import CalciumTokenizer
from models.tokenizers.continuous import CONTINUOUS_KEYS, ContinuousTokenizer
from models.tokenizers.fmri import FMRITokenizer
from models.tokenizers.multimodal import TOKENIZER_KINDS, MultimodalTokenizer, build_tokenizer
from models.tokenizers.spikes import SpikesTokenizer
from models.tokenizers.video import VideoTokenizer

__all__ = [
    "Tokens", "ChannelPatchTokenizer", "sinusoidal_encoding", "zscore_channels",
    "SpikesTokenizer", "ContinuousTokenizer", "CONTINUOUS_KEYS", "CalciumTokenizer", "FMRITokenizer",
    "BehaviorTokenizer", "AudioTokenizer", "VideoTokenizer",
    "MultimodalTokenizer", "TOKENIZER_KINDS", "build_tokenizer",
]
