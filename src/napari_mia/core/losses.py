"""Losses by name (smp's implementations), all skipping IGNORE pixels, with optional class weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segmentation_models_pytorch import losses as smp_losses

from .config import TrainingConfig
from .data import IGNORE, Sample


def class_weights(config: TrainingConfig, samples: Sequence[Sample]) -> list[float] | None:
    """Per-class loss weights: none, the config's manual ones, or inverse pixel frequency (mean 1)."""
    if config.class_weighting == "off":
        return None
    if config.class_weighting == "manual":
        weights = np.asarray(config.class_weights, np.float64)
    else:
        counts = np.zeros(config.n_classes, np.float64)
        for sample in samples:
            labelled = sample.labels[sample.labels != IGNORE]
            counts += np.bincount(labelled, minlength=config.n_classes)[: config.n_classes]
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    return list(weights / weights[weights > 0].mean())


def build_loss(config: TrainingConfig, weights: list[float] | None = None):
    """A callable ``(logits (N, K, H, W), target (N, H, W)) -> scalar``."""
    cross_entropy = torch.nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32), ignore_index=IGNORE)
    if config.loss == "cross_entropy":
        return _on_device(cross_entropy)
    if config.loss == "focal":
        return smp_losses.FocalLoss("multiclass", ignore_index=IGNORE, class_weights=weights)
    if config.loss == "jaccard":
        return smp_losses.JaccardLoss("multiclass", ignore_index=IGNORE, class_weights=weights)
    if config.loss == "lovasz":
        return smp_losses.LovaszLoss("multiclass", ignore_index=IGNORE)
    dice = smp_losses.DiceLoss("multiclass", ignore_index=IGNORE, class_weights=weights)
    if config.loss == "dice":
        return dice
    cross_entropy = _on_device(cross_entropy)
    return lambda logits, target: cross_entropy(logits, target) + dice(logits, target)


def _on_device(loss: torch.nn.CrossEntropyLoss):
    """Move the class-weight tensor to the logits' device on first use."""

    def compute(logits, target):
        if loss.weight is not None and loss.weight.device != logits.device:
            loss.to(logits.device)
        return loss(logits, target)

    return compute
