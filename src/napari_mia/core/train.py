"""The training loop: one generator of typed events that a widget or a CLI consumes.

Read it top to bottom: build data, model, optimizer and loss; for each batch set the learning rate,
step, and yield a :class:`BatchEnd`; at the end of each epoch validate on whole frames and yield an
:class:`EpochEnd`. :meth:`Trainer.request_stop` is honoured at the next batch, and calling
:meth:`Trainer.run` again resumes the same run (model, optimizer, schedule and position kept).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Generator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import distributed
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .augment import build_train_transform
from .config import TrainingConfig
from .data import IGNORE, Sample, check_classes, make_dataset
from .errors import OUT_OF_MEMORY_ADVICE, is_out_of_memory, release_memory
from .events import BatchEnd, EpochEnd, Preview, TrainingDone
from .infer import classify, iter_predict, iter_probabilities, prediction_options, run
from .losses import build_loss, class_weights
from .metrics import (
    InstanceScore,
    PointScore,
    classification_metrics,
    confusion_matrix,
    headline_metric,
    segmentation_metrics,
)
from .models import bf16_autocast, build_model, channels_last, resolve_device, uses_bf16
from .optimizers import OPTIMIZERS
from .postprocess import calibrate_mass_per_object, calibrate_peak_thresholds, config_instances, config_points


def learning_rate_at(config: TrainingConfig, progress: float, epoch: int) -> float:
    """Scheduled learning rate; ``progress`` runs from 0 to 1 (steps, or the time budget if sooner).

    Plateau reduction is not a function of time: :class:`Trainer` applies it on top of this.
    """
    base, low = config.learning_rate, config.min_learning_rate
    if config.lr_schedule == "cosine":
        warmup = config.warmup_fraction
        if progress < warmup:
            return max(base * progress / warmup, low)
        phase = min(1.0, (progress - warmup) / (1 - warmup))
        return low + 0.5 * (base - low) * (1 + math.cos(math.pi * phase))
    if config.lr_schedule == "step":
        return max(base * config.lr_factor ** (epoch // config.lr_step_every), low)
    return base


class PrecisionChoice:
    """Whether each training step runs under bf16 autocast.

    Fixed on CUDA (bf16 when mixed precision is on) and where bf16 brings nothing (fp32). On a CPU with
    bf16 matrix units bf16 trains plain convolutions (resnet) 2x faster but depthwise ones (efficientnet,
    mobilenet) slower than fp32, so the first steps alternate between the two, timed after one warm-up
    step each, and the faster is kept: every step still trains the model.
    """

    TRIALS = 2  # timed steps per precision

    def __init__(self, device: torch.device, mixed_precision: bool):
        self.bf16 = uses_bf16(device, mixed_precision)
        self.times: dict[bool, list[float]] | None = None
        if self.bf16 and device.type == "cpu":
            self.times = {False: [], True: []}
            self._steps = 0

    def next(self) -> bool:
        return self.bf16 if self.times is None else self._steps % 2 == 1

    def record(self, bf16: bool, seconds: float) -> None:
        if self.times is None:
            return
        self._steps += 1
        if self._steps > 2:  # the first step in each precision builds its kernels
            self.times[bf16].append(seconds)
        if len(self.times[True]) == len(self.times[False]) == self.TRIALS:
            self.bf16 = min(self.times[True]) < min(self.times[False])
            self.times = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def cudnn_autotuned():
    """cuDNN times its kernels and keeps the fastest for the training patches' one shape. Only there:
    validation frames and prediction tiles change size, and every new shape would be timed anew, which
    costs far more than it saves."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


# Training frames predicted when detection training ends, to measure the heatmap mass of one object.
MASS_FRAMES = 64


class Trainer:
    """Holds one training run; ``model`` continues from given weights (retraining = fine-tuning)."""

    def __init__(
        self,
        config: TrainingConfig,
        train_samples: Sequence[Sample],
        validation_samples: Sequence[Sample] = (),
        model: torch.nn.Module | None = None,
        preview_image: tuple[np.ndarray, int | None] | None = None,
    ):
        config.require_resolved()
        check_classes(list(train_samples), config)
        seed_everything(config.seed)
        self.config = config
        self.device = resolve_device(config.device)
        self.model = channels_last((model if model is not None else build_model(config)).to(self.device), self.device)
        self.precision = PrecisionChoice(self.device, config.mixed_precision)
        self.dataset = make_dataset(list(train_samples), config, build_train_transform(config))
        self.validation_samples = list(validation_samples)
        self.batch_size = config.batch_size
        # Under torchrun every process takes its share of each epoch's patches; DDP averages the gradients.
        self.distributed = distributed.is_available() and distributed.is_initialized()
        self.world_size = distributed.get_world_size() if self.distributed else 1
        self.network = self.model
        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        self.batches_per_epoch = max(1, len(self.dataset) // (self.batch_size * self.world_size))
        epochs_for_minimum = math.ceil(config.min_batches / self.batches_per_epoch)
        if model is None and epochs_for_minimum > config.epochs:  # few, small images: up to the minimum of batches
            self.config = config = config.replace(epochs=epochs_for_minimum)
        self.optimizer = OPTIMIZERS[config.optimizer](self.model.parameters(), config.learning_rate)
        self.class_weights = class_weights(config, self.dataset.samples)
        self.loss_function = build_loss(config, self.class_weights)
        self.preview_image = preview_image
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.seconds = 0.0
        self.history: list[EpochEnd] = []
        # Going on from trained weights: a lower learning rate keeps what was learned.
        self.plateau_scale = config.retrain_lr_factor if model is not None else 1.0
        self._last_reduction = 0
        self.best: tuple[float, int, dict] | None = None  # (metric, epoch, weights on CPU)
        self._stop_requested = False
        self._epoch_losses: list[float] = []

    def request_stop(self) -> None:
        """Stop at the end of the current batch; :meth:`run` resumes later."""
        self._stop_requested = True

    @property
    def progress(self) -> float:
        by_steps = self.step / (self.config.epochs * self.batches_per_epoch)
        if self.config.max_minutes:
            return max(by_steps, self.seconds / (60 * self.config.max_minutes))
        return by_steps

    def _loader(self) -> DataLoader:
        """The rest of this epoch's batches (after a Resume mid-epoch, from where it stopped); under DDP
        this process's share of them."""
        first, last = self.batch_in_epoch * self.batch_size, self.batches_per_epoch * self.batch_size
        if self.distributed:
            sampler = DistributedSampler(range(last * self.world_size), shuffle=False, drop_last=True)
            indices = list(sampler)[first:last]
        else:
            indices = range(first, last)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=indices,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        started, bf16 = time.perf_counter(), self.precision.next()
        images = channels_last(images.to(self.device, non_blocking=True), self.device)
        labels = labels.to(self.device, non_blocking=True)
        with cudnn_autotuned():  # the backward pass's kernels too
            with bf16_autocast(self.device.type, bf16):
                logits = self.network(images)
            loss = self.loss_function(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        loss = loss.item()
        self.precision.record(bf16, time.perf_counter() - started)
        return loss

    def run(self) -> Generator[BatchEnd | EpochEnd | TrainingDone, None, TrainingDone]:
        """Train until the epochs are done, the time budget is spent, or a stop is requested."""
        self._stop_requested = False
        config = self.config
        reason = "finished"
        clock = time.perf_counter()
        while self.epoch < config.epochs and reason == "finished":
            self.dataset.epoch = self.epoch
            self.model.train()
            epoch_start = time.perf_counter()
            learning_rate = learning_rate_at(config, self.progress, self.epoch) * self.plateau_scale
            for images, labels in self._loader():
                learning_rate = learning_rate_at(config, self.progress, self.epoch) * self.plateau_scale
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate
                try:
                    loss = self._train_step(images, labels)
                except Exception as error:
                    if not is_out_of_memory(error):
                        raise
                    self.optimizer.zero_grad(set_to_none=True)  # the failed step changed no weight
                    release_memory()
                    reason = "out of memory"
                    break
                self._epoch_losses.append(loss)
                self.batch_in_epoch += 1
                self.step += 1
                # Wall-clock time, data loading and validation included, so the budget is honest.
                batch_seconds, clock = time.perf_counter() - clock, time.perf_counter()
                self.seconds += batch_seconds
                yield BatchEnd(self.epoch, self.batch_in_epoch, self.batches_per_epoch, self.step, loss,
                               learning_rate, len(images) / max(batch_seconds, 1e-9))
                if self._stop_requested:
                    reason = "stopped"
                elif config.max_minutes and self.seconds >= 60 * config.max_minutes:
                    reason = "time budget"
                reason = self._agree(reason)
                if reason != "finished":
                    break
            if self.batch_in_epoch == self.batches_per_epoch:
                yield self._end_epoch(time.perf_counter() - epoch_start, learning_rate)
                if self._preview_due():
                    image, channel_axis = self.preview_image
                    labels = yield from iter_predict(self.model, image, self.config, channel_axis, self.device)
                    yield Preview(self.epoch - 1, labels)
                if reason == "finished" and self._patience_spent():
                    reason = "early stopping"
        best_epoch = self._restore_best() if reason in ("finished", "time budget", "early stopping") else None
        if config.kind.points and reason != "out of memory":
            self._calibrate_peaks()
        message = OUT_OF_MEMORY_ADVICE if reason == "out of memory" else ""
        done = TrainingDone(reason, self.epoch, self.step, self.seconds, best_epoch, message)
        yield done
        return done

    def _agree(self, reason: str) -> str:
        """All processes stop at the same batch (any one's stop or spent budget stops them all)."""
        if not self.distributed:
            return reason
        stop = self._reduce(float(reason != "finished"), distributed.ReduceOp.MAX)
        return ("time budget" if reason == "finished" else reason) if stop else reason

    def _reduce(self, value: float, op) -> float:
        """``value`` combined over all processes (one collective every process makes in the same order)."""
        tensor = torch.tensor([value], dtype=torch.float64,
                              device=self.device if distributed.get_backend() == "nccl" else "cpu")
        distributed.all_reduce(tensor, op=op)
        return tensor.item()

    def _epoch_train_loss(self) -> float:
        """The epoch's mean training loss; under DDP over every process's batches, so that all processes
        log the same loss and reduce the learning rate on the same plateau (their weights stay equal)."""
        loss = float(np.mean(self._epoch_losses))
        if not self.distributed:
            return loss
        return self._reduce(loss, distributed.ReduceOp.SUM) / self.world_size

    def _calibrate_peaks(self) -> None:
        """Measure the heatmap mass of one object on every labelled frame (up to ``MASS_FRAMES`` of the
        training ones) and choose each class's peak threshold on the validation frames; both travel in the
        config."""
        options = prediction_options(self.config, self.device)
        training = list(self.dataset.samples)
        if len(training) > MASS_FRAMES:
            chosen = np.random.default_rng(self.config.seed).choice(len(training), MASS_FRAMES, replace=False)
            training = [training[i] for i in sorted(chosen)]
        labelled = training + self.validation_samples
        heatmaps = [run(iter_probabilities(self.model, s.image, **options)) for s in labelled]
        truths = [s.truth for s in labelled]
        self.config.mass_per_object = calibrate_mass_per_object(heatmaps, truths, self.config.n_classes)
        if self.validation_samples:
            first = len(training)
            self.config.peak_thresholds = calibrate_peak_thresholds(heatmaps[first:], truths[first:], self.config)
            self.config.threshold_frames = len(self.validation_samples)

    def _preview_due(self) -> bool:
        every = self.config.preview_every
        pixels_out = self.config.kind.label_images
        return bool(every) and pixels_out and self.preview_image is not None and self.epoch % every == 0

    def _patience_spent(self) -> bool:
        patience = self.config.early_stopping_patience
        return bool(patience) and self.best is not None and self.epoch - 1 - self.best[1] >= patience

    def _remember_if_best(self, event: EpochEnd) -> None:
        metric = headline_metric(event.val_metrics)
        value = event.val_metrics.get(metric, float("nan")) if metric else float("nan")
        if np.isfinite(value) and (self.best is None or value > self.best[0]):
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.best = (value, event.epoch, weights)

    def _restore_best(self) -> int | None:
        """Load the best validated weights (keep-best); returns their epoch."""
        if not self.config.keep_best or self.best is None:
            return None
        self.model.load_state_dict(self.best[2])
        return self.best[1]

    def _end_epoch(self, seconds: float, learning_rate: float) -> EpochEnd:
        validation = self.validate() if self.validation_samples else {}
        event = EpochEnd(
            epoch=self.epoch,
            epochs=self.config.epochs,
            train_loss=self._epoch_train_loss(),
            learning_rate=learning_rate,
            seconds=seconds,
            val_loss=validation.pop("loss", None),
            val_metrics=validation,
        )
        self.history.append(event)
        self._remember_if_best(event)
        self._update_plateau()
        self.epoch += 1
        self.batch_in_epoch = 0
        self._epoch_losses = []
        return event

    def _update_plateau(self) -> None:
        """Reduce on plateau of the validation loss (training loss without validation; MIA only
        watches the training loss): after ``lr_patience`` epochs without a new best, scale by ``lr_factor``."""
        config = self.config
        if config.lr_schedule != "plateau":
            return
        monitored = [e.val_loss if e.val_loss is not None else e.train_loss for e in self.history]
        best_epoch = int(np.argmin(monitored))
        since_reduction = len(self.history) - max(best_epoch + 1, self._last_reduction)
        if since_reduction >= config.lr_patience:
            self.plateau_scale = max(self.plateau_scale * config.lr_factor,
                                     config.min_learning_rate / config.learning_rate)
            self._last_reduction = len(self.history)

    def validate(self) -> dict[str, float]:
        """Loss and metrics on whole validation frames, predicted exactly as at inference."""
        return evaluate(self.model, self.validation_samples, self.config, self.device)


def evaluate(model, samples: Sequence[Sample], config: TrainingConfig, device) -> dict[str, float]:
    """Validation loss and the application's metrics, on whole frames predicted as at inference."""
    if config.kind.image_classes:
        return _evaluate_classes(model, samples, config, device)
    matrix = np.zeros((config.n_outputs, config.n_outputs), np.int64)
    instance_score = InstanceScore()
    if config.kind.points:
        point_score = PointScore(config.classes, config.object_size * config.downscale)
    loss_sum, labelled = 0.0, 0
    for sample in samples:
        probabilities = run(iter_probabilities(model, sample.image, **prediction_options(config, device)))
        if config.kind.points:
            positions, classes, _ = config_points(probabilities, config)
            point_score.add(sample.truth, np.column_stack([positions, classes]))
            loss_sum += float(((probabilities - sample.labels) ** 2).sum())
            labelled += sample.labels.size
            continue
        matrix += confusion_matrix(probabilities.argmax(0), sample.labels, config.n_outputs)
        if config.kind.object_ids:
            instance_score.add(sample.truth, config_instances(probabilities, config, sample.scale))
        keep = sample.labels != IGNORE
        truth = sample.labels[keep].astype(np.int64)
        picked = probabilities[:, keep][truth, np.arange(truth.size)]
        loss_sum += float(-np.log(np.clip(picked, 1e-7, 1.0)).sum())
        labelled += truth.size
    metrics = {"loss": loss_sum / max(1, labelled)}
    if config.kind.points:
        return {**metrics, **point_score.metrics()}
    if config.kind.object_ids:
        foreground = matrix[1:, 1:].sum()
        metrics["foreground_iou"] = float(foreground / max(1, matrix.sum() - matrix[0, 0]))
        return {**metrics, **instance_score.metrics()}
    return {**metrics, **segmentation_metrics(matrix)}


def _evaluate_classes(model, samples: Sequence[Sample], config: TrainingConfig, device) -> dict[str, float]:
    probabilities = classify(model, [s.image for s in samples], config, device)
    truth = np.array([int(s.labels) for s in samples])
    matrix = np.zeros((config.n_classes, config.n_classes), np.int64)
    np.add.at(matrix, (truth, probabilities.argmax(1)), 1)
    loss = float(-np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1)).mean())
    return {"loss": loss, **classification_metrics(matrix, config.classes)}
