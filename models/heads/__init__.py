"""Task heads on the backbone's latent sequence; one module per head family.

- :mod:`~models.heads.reconstruction`: masked reconstruction (MSE on z-scored signals or Poisson on counts)
- :mod:`~models.heads.forecast`: causal forecasting ``horizon`` steps ahead
- :mod:`~models.heads.behavior`: behaviour decoding with R^2
- :mod:`~models.heads.contrastive`: InfoNCE alignment of neural latents with behaviour/stimulus
- :mod:`~models.heads.adversarial`: domain-adversarial classifier behind gradient reversal
- :mod:`~models.heads.uncertainty`: uncertainty-weighted multi-task loss

Every head returns :class:`HeadOutput` ``(prediction, loss, metrics)``.
"""
from models.heads.adversarial import DomainAdversarialHead, GradientReversal, dann_schedule, grad_reverse
from models.heads.base import TIME_MAJOR_KEYS, ChannelReadout, HeadOutput, channel_view, masked_mean
from models.heads.behavior import BehaviorHead, r2_score
from models.heads.contrastive import ContrastiveHead, info_nce
from models.heads.forecast import CausalConv1d, ForecastHead
from models.heads.reconstruction import MaskedReconstructionHead
from models.heads.uncertainty import UncertaintyWeightedLoss

__all__ = [
    "HeadOutput", "ChannelReadout", "channel_view", "masked_mean", "TIME_MAJOR_KEYS",
    "MaskedReconstructionHead", "ForecastHead", "CausalConv1d", "BehaviorHead", "r2_score",
    "ContrastiveHead", "info_nce", "DomainAdversarialHead", "GradientReversal", "grad_reverse", "dann_schedule",
    "UncertaintyWeightedLoss",
]
