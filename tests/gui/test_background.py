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


def test_a_full_garbage_collection_runs_when_the_job_starts_not_during_it():
    generations = []

    def record(phase, info):
        if phase == "stop":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    try:
        create_background_worker(_plain, 1, _start_thread=False)
    finally:
        gc.callbacks.remove(record)
    assert 2 in generations  # the oldest generation: every object of napari's process was visited


def test_short_jobs_start_without_a_collection_and_the_dock_freezes_startup_objects(make_napari_viewer):
    from napari_mia.gui.widget import MiaWidget

    generations = []

    def record(phase, info):
        if phase == "stop":
            generations.append(info["generation"])

    gc.callbacks.append(record)
    gc.disable()  # only an explicit gc.collect() can run now
    try:
        create_background_worker(_plain, 1, collect_garbage=False, _start_thread=False)
    finally:
        gc.enable()
        gc.callbacks.remove(record)
    assert generations == []
    MiaWidget(make_napari_viewer())
    assert gc.get_freeze_count() > 0  # napari's window and modules are out of every later collection
