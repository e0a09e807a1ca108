"""Keep triton's copy of LLVM to itself, so that triton can load after an OpenGL context exists.

triton's ``libtriton.so`` links LLVM statically and exports its symbols. PyTorch imports triton lazily
(``torchvision.ops`` pulls in ``torch._dynamo``, which checks for it). When napari's canvas has already
made an OpenGL context with Mesa (llvmpipe, and the Intel/AMD drivers), Mesa's ``libLLVM`` sits in the
process's global symbol scope; ``libtriton.so`` then binds its own LLVM calls to that other, incompatible
LLVM and its static initialisers crash the process (a segmentation fault in ``PassBuilder.cpp``).

Loading ``libtriton.so`` once with ``RTLD_DEEPBIND`` (its own symbols before the global ones) and
``RTLD_LOCAL`` (its symbols stay out of the global scope) before anything imports triton fixes the
binding for good: the later ``import triton`` gets the same, already relocated library. This is what
``-Bsymbolic`` would do at link time. Without triton, or off Linux, nothing happens.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def libtriton_path() -> Path | None:
    """Where triton's compiled module lies, found without importing triton (which would load it)."""
    if "triton" in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "_C"
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (folder / f"libtriton{suffix}").is_file():
            return folder / f"libtriton{suffix}"
    return None


def load_triton_privately() -> bool:
    """Load libtriton with its own LLVM bound to itself; True if it was loaded here."""
    if not sys.platform.startswith("linux") or not hasattr(os, "RTLD_DEEPBIND"):
        return False
    path = libtriton_path()
    if path is None:
        return False
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_DEEPBIND)
    except OSError:  # a broken triton install: leave it to PyTorch's own import to report
        return False
    return True
