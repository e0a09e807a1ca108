"""Model files: one ``.safetensors`` file holding the weights and, in its header, the full config and
training history as JSON. Loading parses tensors and JSON only, so a file can never run code; a
write goes to a temporary file that replaces the target only when complete."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import ConfigError, TrainingConfig
from .events import EpochEnd
from .models import build_model

FORMAT = "napari-mia-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """The file is not a napari-mia model this version can read."""


def save_model(path: str | os.PathLike, model: torch.nn.Module, config: TrainingConfig, history=()) -> Path:
    """Write the model to ``path`` exactly as named (``.safetensors`` is the usual suffix, not added)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict()),
        "history": json.dumps([asdict(event) for event in history]),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """``path``, or ``path.safetensors`` where only that exists (earlier versions added the suffix)."""
    path = Path(path)
    with_suffix = path.with_name(path.name + ".safetensors")
    if not path.is_file() and path.suffix != ".safetensors" and with_suffix.is_file():
        return with_suffix
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    path = resolve_model_path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(
            f"{path}: not a napari-mia model (expected a .safetensors model file; it is truncated, "
            f"corrupted or of another kind): {error}"
        ) from error
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path}: a safetensors file, but not a napari-mia model")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer napari-mia; upgrade to load it")
    return metadata


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Return ``(model, config, history)``: the model in eval mode on ``device``, the history as the
    ``EpochEnd`` events of every run that trained it."""
    path = resolve_model_path(path)
    metadata = read_metadata(path)
    try:
        config = TrainingConfig.from_dict(json.loads(metadata["config"]))
    except (ConfigError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: model settings cannot be read: {error}") from error
    # The weights come from the file, so ImageNet weights need not be present to load a model.
    model = build_model(config.replace(pretrained=False))
    try:
        model.load_state_dict(load_file(str(path)))
    except (SafetensorError, RuntimeError) as error:
        raise ModelFileError(f"{path}: weights do not fit the saved settings: {error}") from error
    history = [EpochEnd(**epoch) for epoch in json.loads(metadata.get("history", "[]"))]
    return model.to(device).eval(), config, history


def history_csv_path(model_path: str | os.PathLike) -> Path:
    """``m.safetensors`` -> ``m.history.csv``; ``m`` -> ``m.history.csv``."""
    model_path = Path(model_path)
    stem = model_path.stem if model_path.suffix == ".safetensors" else model_path.name
    return model_path.with_name(stem + ".history.csv")


def write_history_csv(path: str | os.PathLike, history) -> None:
    """One row per epoch: epoch, train_loss, learning_rate, seconds, val_loss, val_<metric>..."""
    rows = [asdict(event) for event in history]
    for row in rows:
        row.update({f"val_{k}": v for k, v in row.pop("val_metrics").items()})
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["epoch"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
