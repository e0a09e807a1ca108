"""Turning failures into advice the user can act on."""

from __future__ import annotations

import torch

OUT_OF_MEMORY_ADVICE = (
    "out of memory: lower Batch Size or Patch size (or Down Scaling), or use a smaller Model Backbone; "
    "the last good weights are kept"
)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
