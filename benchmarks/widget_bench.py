"""Event-loop stalls while the widget trains and predicts, and training throughput in its worker
versus the same run headless. Prints one JSON line. Run under a display (xvfb-run -a).

Throughput is compared in alternating blocks (headless, widget, headless, widget, ... headless), each
widget block set against the headless blocks either side of it: this shared machine's speed drifts by
a third within minutes, far more than the difference measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEventLoop, Qt, QTimer
from qtpy.QtTest import QTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import blobs  # noqa: E402
from run import WARMUP_STEPS  # noqa: E402

from napari_mia.core.events import BatchEnd  # noqa: E402


class StallMeter:
    """Gaps between the ticks of a 10 ms timer: how long the event loop could not run, from the click
    that starts a job; gaps that end before the job's worker thread starts are the click's own repaints."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(((now - self.last - 0.010) * 1000, now))
        self.last = now

    def start(self, worker):
        self.gaps, self.last, self.started, self.worker_started = [], None, time.perf_counter(), None
        # Called in the worker thread itself: the moment the job takes the CPU.
        worker.started.connect(self._worker_started, Qt.ConnectionType.DirectConnection)
        self.timer.start(10)

    def _worker_started(self):
        self.worker_started = time.perf_counter()

    def stop(self) -> dict:
        """The worst stall while the worker ran (in ms, when in s after the click, and the next worst,
        which tells a one-off from a steady cost), and the worst before it started."""
        self.timer.stop()
        running = sorted((gap, end) for gap, end in self.gaps if end > self.worker_started)
        before = [gap for gap, end in self.gaps if end <= self.worker_started]
        return {"worst_ms": max(0.0, running[-1][0]), "worst_at_s": running[-1][1] - self.started,
                "second_worst_ms": max(0.0, running[-2][0]), "before_worker_ms": max([0.0, *before])}


def headless_block(trainer, batches: int) -> float:
    """Images/s over ``batches`` more batches of a headless run, resumed where it stopped (the batch
    that restarts its loader not timed)."""
    times = []
    for event in trainer.run():
        if isinstance(event, BatchEnd):
            times.append(time.perf_counter())
            if len(times) > batches:
                trainer.request_stop()
    return (len(times) - 1) * trainer.config.batch_size / (times[-1] - times[0])


def widget_block(widget, meter: StallMeter, batches: int, skipped: int) -> tuple[float, dict]:
    """Images/s of the widget's worker over ``batches`` batches after ``skipped``, then Stop; and the
    stalls from the click that started it until the worker finished."""
    times = []
    meter.start(widget.worker)
    widget.worker.yielded.connect(lambda e: times.append(time.perf_counter()) if isinstance(e, BatchEnd) else None)
    wait(lambda: len(times) >= skipped + batches)
    widget.stop_training()
    wait(lambda: widget.worker is None)
    rate = (len(times) - skipped) * widget.trainer.config.batch_size / (times[-1] - times[skipped - 1])
    return rate, meter.stop()


def wait(predicate, timeout=900):
    """Run the real Qt event loop (idle like napari's) until ``predicate`` holds."""
    loop, deadline = QEventLoop(), time.time() + timeout
    poll = QTimer()
    poll.timeout.connect(lambda: loop.quit() if predicate() or time.time() > deadline else None)
    poll.start(20)
    loop.exec_()
    poll.stop()


def click(button) -> None:
    """As a user clicks: the button takes the keyboard focus too. (A spin box left with the focus blinks
    its cursor twice a second, and each blink recomposites the whole OpenGL window.)"""
    QTest.mouseClick(button.native, Qt.MouseButton.LeftButton)


def main() -> None:
    import napari

    from napari_mia.core import Trainer, TrainingConfig, make_samples
    from napari_mia.gui.widget import MiaWidget

    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20, help="timed batches per block")
    parser.add_argument("--blocks", type=int, default=3, help="widget blocks, each between two headless ones")
    parser.add_argument("--hidden", action="store_true", help="no window: isolates rendering costs")
    parser.add_argument("--window", type=int, nargs=2, default=(1280, 1024), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--niceness", type=int, help="priority of the worker threads (default: the widget's)")
    args = parser.parse_args()
    if args.niceness is not None:
        from napari_mia.gui import background
        background.NICENESS = args.niceness
    image = np.concatenate([blobs((256, 256), 12, seed=s)[0] for s in range(8)])
    labels = np.concatenate([blobs((256, 256), 12, seed=s)[1] for s in range(8)])
    config = TrainingConfig(epochs=1000, validation_fraction=0.0, backbone="resnet18", pretrained=False,
                            color_mode="mono", downscale=1.0)
    headless = Trainer(config, make_samples(image, labels, config))
    headless_block(headless, WARMUP_STEPS)  # its precision trials, like the widget run's below

    viewer = napari.Viewer(show=not args.hidden)
    # A fixed window size: every repaint composites the whole OpenGL window, so its cost follows the size.
    viewer.window._qt_window.resize(*args.window)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="labels")
    widget = MiaWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.epochs.value, widget.validation_fraction.value = 1000, 0.0
    widget.predict_after.value = False
    # The window draws itself once before a user can press Train; that first paint is not a training stall.
    wait(lambda: False, timeout=1)
    meter = StallMeter()
    headless_rates, widget_rates, stalls = [headless_block(headless, args.batches)], [], []
    for block in range(args.blocks):
        clicked = time.perf_counter()
        click(widget.train_button if block == 0 else widget.resume_button)  # builds the run, then returns
        if block == 0:
            start_ms = (time.perf_counter() - clicked) * 1000
        # Not timed: the precision trials of a new run; the first batch after Resume.
        rate, stall = widget_block(widget, meter, args.batches, skipped=WARMUP_STEPS if block == 0 else 1)
        widget_rates.append(rate)
        stalls.append(stall)
        headless_rates.append(headless_block(headless, args.batches))
    stall_training = max(stalls, key=lambda stall: stall["worst_ms"])
    # Each widget block against the mean of the headless blocks either side of it.
    ratios = [rate / ((before + after) / 2) for rate, before, after in
              zip(widget_rates, headless_rates, headless_rates[1:])]

    tiles = []
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8), name="big")
    widget.image_layer.value = viewer.layers["big"]
    click(widget.predict_button)
    meter.start(widget.worker)
    widget.worker.yielded.connect(lambda e: tiles.append(e))
    wait(lambda: tiles and tiles[-1].done == tiles[-1].total)
    stall_predicting = meter.stop()
    written = time.perf_counter()
    wait(lambda: widget.worker is None)
    write_ms = (time.perf_counter() - written) * 1000
    viewer.close()
    print(json.dumps({"stall_training_ms": stall_training["worst_ms"],
                      "worst_training_stall_at_s": stall_training["worst_at_s"],
                      "second_worst_training_stall_ms": stall_training["second_worst_ms"],
                      "stall_predicting_ms": stall_predicting["worst_ms"],
                      "click_repaint_training_ms": max(stall["before_worker_ms"] for stall in stalls),
                      "click_repaint_predicting_ms": stall_predicting["before_worker_ms"],
                      "start_training_ms": start_ms, "write_prediction_ms": write_ms,
                      "widget_images_per_second": widget_rates, "headless_images_per_second": headless_rates,
                      "widget_over_headless_blocks": ratios, "widget_over_headless": float(np.median(ratios))}))


if __name__ == "__main__":
    main()
