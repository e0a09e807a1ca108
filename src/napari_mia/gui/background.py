"""Thread workers that leave the CPU to napari first.

On a machine whose cores PyTorch fills, napari's repaints (and, without a GPU driving the display, Mesa's
software OpenGL) queue behind the training threads and the window freezes for a tenth of a second at a
time. Run at a lower scheduling priority, the worker (and the OpenMP threads PyTorch starts from it)
still gets every cycle napari leaves idle, but napari gets the CPU as soon as it needs it.

Python's full garbage collection walks every object of the process (about 650,000 in a napari session)
while holding the interpreter: 0.3-0.5 s here (a fraction of it once :func:`freeze_startup_objects` ran).
The dock collects just before it starts a long job, a moment after the click, so that freeze neither adds
to the click's repaints nor lands in the middle of the run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import os
import sys
import threading

import numpy as np
from napari.qt.threading import create_worker

NICENESS = 10  # Linux niceness of worker threads: 10 weighs about a tenth of a normal thread when both want the CPU
TURN_MS = 20  # a turn of the event loop later: napari draws what the turn before changed, apart from it


@contextlib.contextmanager
def lowered_thread_priority():
    """Lower the calling thread's priority to NICENESS (Linux keeps one per thread; elsewhere this does
    nothing)."""
    if sys.platform != "linux":
        yield
        return
    thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, thread)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, thread, max(before, NICENESS))
    try:
        yield
    finally:  # raising a priority back needs privileges some systems do not grant: then it stays lowered
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, before)


def _at_low_priority(function):
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator(*args, **kwargs):
            with lowered_thread_priority():
                return (yield from function(*args, **kwargs))
        return generator

    @functools.wraps(function)
    def plain(*args, **kwargs):
        with lowered_thread_priority():
            return function(*args, **kwargs)
    return plain


def create_background_worker(function, *args, **kwargs):
    """napari's ``create_worker`` for ``function`` run at a lowered priority in the worker thread."""
    return create_worker(_at_low_priority(function), *args, **kwargs)


def prepare_layers() -> None:
    """Once, while the dock opens: make (and drop) an Image and a Labels layer, off the canvas, and vispy's
    dash patterns. napari's first layer of a session loads pint's unit registry, pandas and xarray (most of
    a second here), and the first Labels layer on the canvas has vispy build the dash patterns of its
    polygon overlay's lines (cached for the process; most of that layer's first add): done now, they do not
    freeze the window at the first Open folder."""
    from napari.layers import Image, Labels
    from vispy.visuals.line.dash_atlas import DashAtlas

    Image(np.zeros((2, 2), np.uint8))
    Labels(np.zeros((2, 2), np.uint8))
    DashAtlas()


def freeze_startup_objects() -> None:
    """Once, after a full collection: move the objects alive now (napari's window, its widgets, the modules)
    out of every later collection (``gc.freeze``). A full collection, including the one napari runs each
    time a layer is removed, then walks only the objects made since: a fraction of the 0.3-0.5 s. Objects
    frozen are only never *cycle*-collected; the session's long-lived objects are what is frozen."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


_frozen = False
