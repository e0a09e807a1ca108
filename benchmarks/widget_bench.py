"""Event-loop stalls while the widget trains and predicts, and training throughput in its worker
versus the same run headless. Prints one JSON line. Run under a display (xvfb-run -a)."""

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
from run import WARMUP_STEPS, mia_images_per_second  # noqa: E402


class StallMeter:
    def __init__(self):
        self.gaps, self.last = [], None
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.gaps.append(now - self.last)
            self.at.append(now - self.started)
        self.last = now

    def start(self):
        self.gaps, self.at, self.last, self.started = [], [], None, time.perf_counter()
        self.timer.start(10)

    def second_worst_ms(self) -> float:
        """The worst stall once the worst is left out: tells a one-off from a steady cost."""
        return max(0.0, (sorted(self.gaps)[-2] - 0.010) * 1000)

    def worst_at_s(self) -> float:
        return self.at[int(np.argmax(self.gaps))]

    def worst_ms(self) -> float:
        self.timer.stop()
        return max(0.0, (max(self.gaps) - 0.010) * 1000)


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

    from napari_mia.core import TrainingConfig, make_samples
    from napari_mia.core.events import BatchEnd
    from napari_mia.gui.widget import MiaWidget

    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--hidden", action="store_true", help="no window: isolates rendering costs")
    parser.add_argument("--window", type=int, nargs=2, default=(1280, 1024), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--niceness", type=int, help="priority of the worker threads (default: the widget's)")
    args = parser.parse_args()
    if args.niceness is not None:
        from napari_mia.gui import background
        background.NICENESS = args.niceness
    image = np.concatenate([blobs((256, 256), 12, seed=s)[0] for s in range(8)])
    labels = np.concatenate([blobs((256, 256), 12, seed=s)[1] for s in range(8)])
    config = TrainingConfig(epochs=1000, validation_fraction=0.0)
    headless = mia_images_per_second(config, make_samples(image, labels, config), args.batches)[0]

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
    times, tiles = [], []
    meter = StallMeter()
    clicked = time.perf_counter()
    click(widget.train_button)  # builds the run and opens the Train Data window, then returns
    start_ms = (time.perf_counter() - clicked) * 1000
    meter.start()  # from here on training runs in the worker
    widget.worker.yielded.connect(lambda e: times.append(time.perf_counter()) if isinstance(e, BatchEnd) else None)
    wait(lambda: len(times) >= args.batches + WARMUP_STEPS)
    widget.stop_training()
    wait(lambda: widget.worker is None)
    stall_training = meter.worst_ms()
    stall_training_at, stall_training_next = meter.worst_at_s(), meter.second_worst_ms()
    in_widget = (len(times) - WARMUP_STEPS) * config.batch_size / (times[-1] - times[WARMUP_STEPS - 1])

    viewer.add_image(np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8), name="big")
    widget.image_layer.value = viewer.layers["big"]
    click(widget.predict_button)
    meter.start()
    widget.worker.yielded.connect(lambda e: tiles.append(e))
    wait(lambda: tiles and tiles[-1].done == tiles[-1].total)
    stall_predicting = meter.worst_ms()
    written = time.perf_counter()
    wait(lambda: widget.worker is None)
    write_ms = (time.perf_counter() - written) * 1000
    viewer.close()
    # Headless again, after the widget: the mean of the two runs either side cancels slow drifts of this
    # shared machine's speed.
    headless = (headless + mia_images_per_second(config, make_samples(image, labels, config), args.batches)[0]) / 2
    print(json.dumps({"stall_training_ms": stall_training, "worst_training_stall_at_s": stall_training_at,
                      "second_worst_training_stall_ms": stall_training_next, "stall_predicting_ms": stall_predicting,
                      "start_training_ms": start_ms, "write_prediction_ms": write_ms,
                      "widget_images_per_second": in_widget, "headless_images_per_second": headless,
                      "widget_over_headless": in_widget / headless}))


if __name__ == "__main__":
    main()
