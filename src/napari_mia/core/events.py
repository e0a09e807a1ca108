"""Typed progress events: the only contract between the core loops and their consumers (widget, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BatchEnd:
    epoch: int
    batch: int
    batches_per_epoch: int
    step: int
    loss: float
    learning_rate: float
    images_per_second: float


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    epochs: int
    train_loss: float
    learning_rate: float
    seconds: float
    val_loss: float | None = None
    val_metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """Prediction of the preview image after ``epoch`` (every ``preview_every`` epochs)."""

    epoch: int
    labels: object


@dataclass(frozen=True)
class TrainingDone:
    """Last event of a run. ``reason`` is "finished", "stopped", "time budget", "early stopping" or
    "out of memory" (then ``message`` says what to lower); ``best_epoch`` is the epoch whose weights
    the model holds when the best were kept."""

    reason: str
    epochs_completed: int
    steps: int
    seconds: float
    best_epoch: int | None = None
    message: str = ""


@dataclass(frozen=True)
class TileDone:
    done: int
    total: int


@dataclass(frozen=True)
class ImagePredicted:
    """One image of an experiment predicted (and saved) by Predict all: ``done`` of ``total``, its labels
    and per-pixel uncertainty."""

    name: str
    done: int
    total: int
    labels: object
    uncertainty: object = None
