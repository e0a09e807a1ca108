"""Losses by name (smp's implementations), all skipping IGNORE pixels."""

from __future__ import annotations

import torch
from segmentation_models_pytorch import losses as smp_losses

from .config import TrainingConfig
from .data import IGNORE


def build_loss(config: TrainingConfig):
    """A callable ``(logits (N, K, H, W), target (N, H, W)) -> scalar``."""
    cross_entropy = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    if config.loss == "cross_entropy":
        return cross_entropy
    if config.loss == "focal":
        return smp_losses.FocalLoss("multiclass", ignore_index=IGNORE)
    dice = smp_losses.DiceLoss("multiclass", ignore_index=IGNORE)
    if config.loss == "dice":
        return dice
    return lambda logits, target: cross_entropy(logits, target) + dice(logits, target)
