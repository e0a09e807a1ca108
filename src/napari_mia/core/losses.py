"""Losses by name (smp's implementations), all skipping IGNORE pixels, with optional class weights.

The registries below are the only lists of loss names: one per kind of annotation, each name mapped to
a builder ``(weights) -> (logits, target) -> scalar``; the first of each is the default."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .config import APPLICATIONS, TrainingConfig
from .data import IGNORE, Sample


def _smp_losses():
    """smp's losses, imported when a loss is built: importing smp loads timm and torchvision, which the
    command line's argument checks do not need."""
    from segmentation_models_pytorch import losses

    return losses


def class_weights(config: TrainingConfig, samples: Sequence[Sample]) -> list[float] | None:
    """Per-class loss weights: none, the config's manual ones, or inverse frequency (mean 1) of
    pixels (segmentation), points (detection) or images (classification). Instance segmentation weighs
    its user classes, background and object; the object's weight goes to both its maps, interior and rim."""
    if config.class_weighting == "off":
        return None
    if config.class_weighting == "manual":
        weights = np.asarray(config.class_weights, np.float64)
    elif not config.kind.label_images:
        counts = np.zeros(config.n_classes, np.float64)
        for sample in samples:
            ids = sample.truth[:, 2] if config.kind.points else np.atleast_1d(sample.labels)
            counts += np.bincount(ids.astype(np.int64), minlength=config.n_classes)[: config.n_classes]
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    else:
        counts = np.zeros(config.n_classes, np.float64)
        for sample in samples:
            labelled = sample.labels[sample.labels != IGNORE]
            if config.kind.object_ids:
                labelled = np.minimum(labelled, 1)  # interior (1) and rim (2) are both the object class
            counts += np.bincount(labelled, minlength=config.n_classes)[: config.n_classes]
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    weights = list(weights / weights[weights > 0].mean())
    return [weights[0], weights[1], weights[1]] if config.kind.object_ids else weights


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on (N, K, H, W) heatmaps; target < 0 is ignored.

    Peaks (target 1) pull the prediction up; near a peak the push down is reduced by (1 - target)^4,
    so the network is not punished for a slightly wide peak. Normalised by the number of peaks.
    """
    labelled = target >= 0
    probability = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    peak = (target >= 1 - 1e-6) & labelled
    positive = -torch.log(probability) * (1 - probability) ** 2 * peak
    negative = -torch.log(1 - probability) * probability**2 * (1 - target).clamp(min=0) ** 4 * (labelled & ~peak)
    per_pixel = positive + negative
    if weights is not None:
        per_pixel = per_pixel * torch.as_tensor(weights, device=logits.device, dtype=logits.dtype)[None, :, None, None]
    return per_pixel.sum() / peak.sum().clamp(min=1)


def masked_mse(logits: torch.Tensor, target: torch.Tensor, weights=None) -> torch.Tensor:
    """Mean squared error between sigmoid heatmaps and targets (MIA's detection loss), target < 0 ignored."""
    labelled = target >= 0
    error = (torch.sigmoid(logits) - target.clamp(min=0)) ** 2
    if weights is not None:
        error = error * torch.as_tensor(weights, device=logits.device, dtype=logits.dtype)[None, :, None, None]
    return (error * labelled).sum() / labelled.sum().clamp(min=1)


def _cross_entropy(weights):
    return _on_device(torch.nn.CrossEntropyLoss(
        weight=None if weights is None else torch.tensor(weights, dtype=torch.float32), ignore_index=IGNORE))


def _ce_dice(weights):
    cross_entropy, dice = _cross_entropy(weights), _dice(weights)
    return lambda logits, target: cross_entropy(logits, target) + dice(logits, target)


def _dice(weights):
    return _smp_losses().DiceLoss("multiclass", ignore_index=IGNORE, class_weights=weights)


SEGMENTATION_LOSSES = {
    "ce_dice": _ce_dice,
    "cross_entropy": _cross_entropy,
    "dice": _dice,
    "focal": lambda weights: _smp_losses().FocalLoss("multiclass", ignore_index=IGNORE, class_weights=weights),
    "jaccard": lambda weights: _smp_losses().JaccardLoss("multiclass", ignore_index=IGNORE, class_weights=weights),
    "lovasz": lambda weights: _smp_losses().LovaszLoss("multiclass", ignore_index=IGNORE),
}
HEATMAP_LOSSES = {
    "heatmap_focal": lambda weights: lambda logits, target: heatmap_focal_loss(logits, target, weights),
    "mse": lambda weights: lambda logits, target: masked_mse(logits, target, weights),
}
CLASSIFICATION_LOSSES = {
    "cross_entropy": _cross_entropy,
    "focal": lambda weights: _smp_losses().FocalLoss("multiclass"),  # accepts (N, K) logits with (N,) targets
}
_BY_ANNOTATIONS = {"labels": SEGMENTATION_LOSSES, "points": HEATMAP_LOSSES, "classes": CLASSIFICATION_LOSSES}


def losses_for(application: str) -> dict:
    """The losses ``application`` trains with, by name, the default first."""
    return _BY_ANNOTATIONS[APPLICATIONS[application].annotations]


def all_loss_names() -> list[str]:
    return sorted({name for losses in _BY_ANNOTATIONS.values() for name in losses})


def build_loss(config: TrainingConfig, weights: list[float] | None = None):
    """A callable ``(logits, target) -> scalar``: (N, K, H, W) logits with (N, H, W) class ids,
    (N, K, H, W) heatmaps for detection, or (N, K) logits with (N,) ids for classification."""
    return losses_for(config.application)[config.loss](weights)


def _on_device(loss: torch.nn.CrossEntropyLoss):
    """Move the class-weight tensor to the logits' device on first use."""

    def compute(logits, target):
        if loss.weight is not None and loss.weight.device != logits.device:
            loss.to(logits.device)
        return loss(logits, target)

    return compute
