import gc
import os
import sys
import threading

import pytest

from napari_mia.gui.background import NICENESS, create_background_worker

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are a Linux feature")


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _steps(count):
    for step in range(count):
        yield step, _priority()
    return "done", _priority()


def _plain(value):
    return value, _priority()


@linux_only
def test_generator_worker_runs_below_napari_and_keeps_events_and_result(qtbot):
    main_priority = _priority()
    worker = create_background_worker(_steps, 3, _start_thread=False)
    events, results = [], []
    worker.yielded.connect(events.append)
    worker.returned.connect(results.append)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert [step for step, _ in events] == [0, 1, 2]
    assert all(priority >= NICENESS for _, priority in events)
    assert results[0][0] == "done" and results[0][1] >= NICENESS
    assert _priority() == main_priority  # napari's own thread is left alone


@linux_only
def test_function_worker_runs_below_napari_and_returns(qtbot):
    worker = create_background_worker(_plain, 42, _start_thread=False)
    results = []
    worker.returned.connect(results.append)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert results[0][0] == 42 and results[0][1] >= NICENESS


def _collections(action) -> list[int]:
    """The generations of the garbage collections ``action()`` ran."""
    generations = []

    def record(phase, info):
        if phase == "stop":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    gc.disable()  # only an explicit gc.collect() can run now
    try:
        action()
    finally:
        gc.enable()
        gc.callbacks.remove(record)
    return generations


def test_a_job_collects_garbage_when_it_starts_not_in_the_click_nor_during_it(make_napari_viewer, qtbot):
    from napari_mia.gui.widget import MiaWidget

    widget = MiaWidget(make_napari_viewer())
    assert gc.get_freeze_count() > 0  # napari's window and modules are out of every later collection
    worker = create_background_worker(_plain, 1, _start_thread=False)
    assert _collections(lambda: widget.start_prediction_job(worker, "predicting")) == []  # the click
    blocker = qtbot.waitSignal(worker.finished, timeout=10_000)
    generations = _collections(blocker.wait)  # the settle delay, the start, the job
    assert 2 in generations  # the oldest generation: every object not frozen was visited, before the job
