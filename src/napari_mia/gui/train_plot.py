"""The "Train Data" window: live loss, metric and learning-rate plots with counters, Stop/Resume,
history export. pyqtgraph updates curves in about a millisecond, so plotting never stalls napari."""

from __future__ import annotations

import math
import time

import pyqtgraph as pg
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core.events import BatchEnd, EpochEnd, TrainingDone
from ..core.io import write_history_csv
from ..core.metrics import headline_metric

# Each redraw takes CPU from training's two threads: with bf16 training at 3-4 batches/s, redraws every
# 250 ms cost a shown window's worker about 10 % of its throughput here (widget/headless 0.79 against 0.87-0.91).
_REDRAW_MS = 1000
_VALIDATION_PEN = pg.mkPen("#D55E00", width=2)
_TRAIN_PEN = pg.mkPen("#56B4E9", width=2)
_TRAIN_DASHED = pg.mkPen("#56B4E9", width=2, style=pg.QtCore.Qt.PenStyle.DashLine)


class TrainDataWindow(QWidget):
    """Fed with the training events; ``stop``/``resume`` are the training widget's callbacks."""

    def __init__(self, stop=None, resume=None, parent=None):
        super().__init__(parent)
        self.setObjectName("napari-mia Train Data")
        self.steps, self.batch_losses, self.learning_rates = [], [], []
        self.epochs: list[EpochEnd] = []
        self._last_batch: BatchEnd | None = None
        self._last_batch_time: float | None = None
        self._seconds_per_batch: float | None = None

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumHeight(280)
        self.loss_plot = self._plot(0, 0, "training loss", "batch")
        self.lr_plot = self._plot(0, 1, "learning rate", "batch")
        self.epoch_loss_plot = self._plot(1, 0, "loss per epoch", "epoch")
        self.metric_plot = self._plot(1, 1, "validation metric", "epoch")
        for plot in (self.loss_plot, self.epoch_loss_plot):
            plot.setLogMode(y=True)  # early losses would flatten the rest of the curve
        self.batch_curve = self.loss_plot.plot(pen=_TRAIN_PEN)
        self.lr_curve = self.lr_plot.plot(pen=_TRAIN_PEN)
        self.train_epoch_curve = self.epoch_loss_plot.plot(pen=_TRAIN_DASHED, symbol="o", symbolSize=5,
                                                           name="train")
        self.val_epoch_curve = self.epoch_loss_plot.plot(pen=_VALIDATION_PEN, symbol="o", symbolSize=5,
                                                         name="validation")
        self.metric_curve = self.metric_plot.plot(pen=_VALIDATION_PEN, symbol="o", symbolSize=5)

        self.counters = QLabel("Waiting for training to start.")
        self.stop_button = QPushButton("Stop Training")
        self.resume_button = QPushButton("Resume Training")
        self.export_button = QPushButton("Export history (CSV)")
        self.png_button = QPushButton("Save plot (PNG)")
        self.resume_button.setEnabled(False)
        if stop is not None:
            self.stop_button.clicked.connect(stop)
        if resume is not None:
            self.resume_button.clicked.connect(resume)
        self.export_button.clicked.connect(self._ask_export)
        self.png_button.clicked.connect(self._ask_png)

        buttons = QHBoxLayout()
        for button in (self.stop_button, self.resume_button, self.export_button, self.png_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.counters)
        layout.addWidget(self.graphics, stretch=1)
        layout.addLayout(buttons)

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self.redraw)

    def _plot(self, row: int, column: int, title: str, x_label: str):
        plot = self.graphics.addPlot(row=row, col=column, title=title)
        plot.setLabel("bottom", x_label)
        plot.showGrid(x=True, y=True, alpha=0.3)
        # An axis that narrows when its labels get shorter re-lays out the window: another full paint.
        plot.getAxis("left").setStyle(autoReduceTextSpace=False)
        return plot

    def reset(self) -> None:
        """A new training run (not a resume): clear the curves."""
        self.steps.clear(), self.batch_losses.clear(), self.learning_rates.clear(), self.epochs.clear()
        self._last_batch, self._last_batch_time, self._seconds_per_batch = None, None, None
        self.redraw()

    def on_event(self, event) -> None:
        if isinstance(event, BatchEnd):
            self._last_batch = event
            self._time_batch(time.perf_counter())
            self.steps.append(event.step)
            self.batch_losses.append(event.loss)
            self.learning_rates.append(event.learning_rate)
            self.stop_button.setEnabled(True)
            self.resume_button.setEnabled(False)
        elif isinstance(event, EpochEnd):
            self.epochs.append(event)
        elif isinstance(event, TrainingDone):
            self.stop_button.setEnabled(False)
            self.resume_button.setEnabled(event.reason == "stopped")
            self._last_batch_time = None  # a pause is not batch time
        if not self._redraw_timer.isActive():  # at most one redraw per _REDRAW_MS
            self._redraw_timer.start(_REDRAW_MS)

    def _time_batch(self, now: float) -> None:
        """Smoothed seconds per batch, for the ETA."""
        if self._last_batch_time is not None:
            interval = now - self._last_batch_time
            previous = self._seconds_per_batch
            self._seconds_per_batch = interval if previous is None else 0.9 * previous + 0.1 * interval
        self._last_batch_time = now

    def redraw(self) -> None:
        self.batch_curve.setData(self.steps, self.batch_losses)
        self.lr_curve.setData(self.steps, self.learning_rates)
        numbers = [e.epoch + 1 for e in self.epochs]
        self.train_epoch_curve.setData(numbers, [e.train_loss for e in self.epochs])
        validated = [e for e in self.epochs if e.val_loss is not None]
        self.val_epoch_curve.setData([e.epoch + 1 for e in validated], [e.val_loss for e in validated])
        metric = headline_metric(validated[-1].val_metrics) if validated else None
        if metric:
            self.metric_plot.setTitle(f"validation {metric}")
            self.metric_curve.setData([e.epoch + 1 for e in validated], [e.val_metrics[metric] for e in validated])
        self.counters.setText(self.counter_text(metric))
        _set_log_ticks(self.loss_plot, self.batch_losses)
        _set_log_ticks(self.epoch_loss_plot, [e.train_loss for e in self.epochs] + [e.val_loss for e in validated])
        # pyqtgraph fits the axes to new data while painting, and the new axes then need a second paint
        # (about 20 ms each under training load); fitting them now makes it one.
        for plot in (self.loss_plot, self.lr_plot, self.epoch_loss_plot, self.metric_plot):
            plot.getViewBox().prepareForPaint()

    def counter_text(self, metric: str | None) -> str:
        batch = self._last_batch
        if batch is None:
            return "Waiting for training to start."
        epochs = self.epochs[-1].epochs if self.epochs else None
        parts = [f"Epoch {batch.epoch + 1}" + (f" of {epochs}" if epochs else ""),
                 f"Batch {batch.batch} of {batch.batches_per_epoch}",
                 f"{batch.images_per_second:.1f} patches/s"]
        if epochs and self._seconds_per_batch is not None:
            remaining = epochs * batch.batches_per_epoch - batch.step
            parts.append(f"ETA {_clock(remaining * self._seconds_per_batch)}")
        if metric:
            best = max((e for e in self.epochs if metric in e.val_metrics), key=lambda e: e.val_metrics[metric])
            parts.append(f"best epoch {best.epoch + 1} ({metric} {best.val_metrics[metric]:.3f})")
        return " · ".join(parts)

    def export_csv(self, path) -> None:
        write_history_csv(path, self.epochs)

    def save_png(self, path) -> None:
        self.graphics.grab().save(str(path), "PNG")

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export history", "history.csv", "CSV (*.csv)")
        if path:
            self.export_csv(path)

    def _ask_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot", "training.png", "PNG (*.png)")
        if path:
            self.save_png(path)


def _set_log_ticks(plot, values) -> None:
    """Label a log-scaled axis at 1, 2 and 5 times powers of ten (only the powers over three decades):
    pyqtgraph labels every minor tick of a decade, and in a short plot those labels overlap."""
    positive = [v for v in values if v > 0]
    if not positive:
        plot.getAxis("left").setTicks(None)
        return
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    steps = (1,) if high - low > 3 else (1, 2, 5)
    ticks = [step * 10.0**power for power in range(low, high + 1) for step in steps]
    plot.getAxis("left").setTicks([[(math.log10(tick), f"{tick:g}") for tick in ticks]])


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
