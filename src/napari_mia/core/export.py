"""Models that travel: TorchScript, ONNX and bioimage.io packages, each checked against PyTorch.

Exported networks take the prepared image (channels matched, normalised, down scaled: see the config
that travels with them) as ``(batch, channels, height, width)`` float32 with height and width multiples
of 32, and return what the napari-mia model returns: class logits per pixel (semantic; instance:
background/interior/boundary), heatmap logits (detection) or class logits per image (classification).
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .config import TrainingConfig

FORMATS = ("onnx", "torchscript", "bioimageio")
_CONFIG_KEY = "napari_mia_config"
# An export agrees with PyTorch when every probability is within ABSOLUTE + RELATIVE * |PyTorch's| (the
# kind of test bioimage.io runs). Logits are not compared raw: float32 reordering in a deep network moves
# them by 1e-4 and more where that changes no probability.
ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE = 1e-4, 1e-3


class ExportError(ValueError):
    """An export failed, or the exported model does not reproduce PyTorch's output."""


def on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """The model on the CPU in eval mode: itself when it is so already, else a copy, so that exporting
    never moves the model in use (on a GPU) or changes its mode."""
    if not model.training and all(p.device.type == "cpu" for p in model.parameters()):
        return model
    return copy.deepcopy(model).cpu().eval()


def example_input(config: TrainingConfig, batch: int = 1, seed: int = 0) -> torch.Tensor:
    size = config.patch_size
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, config.input_channels, size, size), generator=generator)


def export_torchscript(model: torch.nn.Module, config: TrainingConfig, path: str | Path) -> Path:
    """A traced TorchScript file with the config as an extra file (``napari_mia_config``)."""
    path = Path(path)
    model = on_cpu(model)
    serialised = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing is deprecated in favour of torch.export, but bioimage.io needs it
        traced = torch.jit.trace(model, example_input(config))
        torch.jit.save(traced, serialised, _extra_files={_CONFIG_KEY: json.dumps(config.to_dict())})
    # Written by Python: PyTorch's own file writer aborts the whole process (napari with it) when the disk
    # is full, where Python raises an OSError that the dock and the CLI report.
    try:
        path.write_bytes(serialised.getbuffer())
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error  # the message names the file
    return path


def _import_onnx(name: str):
    """``import onnx`` or ``onnxruntime``, or an ExportError naming the extra that installs them."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ExportError(f'ONNX export needs {name}: pip install "napari-mia[export]"') from error


def export_onnx(model: torch.nn.Module, config: TrainingConfig, path: str | Path) -> Path:
    """An ONNX file (opset 17) with dynamic batch and image size and the config in its metadata."""
    onnx = _import_onnx("onnx")

    path = Path(path)
    model = on_cpu(model)
    dynamic = {0: "batch", 2: "height", 3: "width"} if not config.kind.image_classes else {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example_input(config),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dynamic, "output": dynamic if not config.kind.image_classes
                                        else {0: "batch"}})
    exported = onnx.load(str(path))
    entry = exported.metadata_props.add()
    entry.key, entry.value = _CONFIG_KEY, json.dumps(config.to_dict())
    onnx.save(exported, str(path))
    return path


def run_exported(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Output of an exported ONNX or TorchScript file for ``images`` (N, C, H, W) float32."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnxruntime = _import_onnx("onnxruntime")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": images.astype(np.float32)})[0]
    with torch.inference_mode():
        return torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(images)).numpy()


def probabilities(logits: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """What the logits (N, C, ...) mean: per-class heatmap probabilities (detection, a sigmoid each) or
    class probabilities (a softmax over C)."""
    logits = logits.astype(np.float64)
    if config.kind.points:
        return 1 / (1 + np.exp(-logits))
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def disagreement(expected_logits: np.ndarray, exported_logits: np.ndarray, config: TrainingConfig,
                 absolute: float = ABSOLUTE_TOLERANCE) -> tuple[float, bool]:
    """(largest probability difference, whether every probability is within tolerance)."""
    expected, exported = probabilities(expected_logits, config), probabilities(exported_logits, config)
    difference = np.abs(exported - expected)
    return float(difference.max()), bool((difference <= absolute + RELATIVE_TOLERANCE * np.abs(expected)).all())


def compare_with_pytorch(model: torch.nn.Module, config: TrainingConfig, path: str | Path,
                         absolute: float = ABSOLUTE_TOLERANCE) -> tuple[float, bool]:
    """``disagreement`` of the exported file with PyTorch on two batches of random images, one of another
    size than the traced one (when sizes may vary)."""
    model = on_cpu(model)
    size = config.patch_size
    shapes = [(2, size, size)] + ([] if config.kind.image_classes else [(1, size + 32, size - 32 or 32)])
    worst, agree = 0.0, True
    for seed, (batch, height, width) in enumerate(shapes, start=1):
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand((batch, config.input_channels, height, width), generator=generator)
        with torch.inference_mode():
            expected = model(images).numpy()
        difference, within = disagreement(expected, run_exported(path, images.numpy()), config, absolute)
        worst, agree = max(worst, difference), agree and within
    return worst, agree


def read_exported_config(path: str | Path) -> TrainingConfig:
    """The config stored in an exported ONNX or TorchScript file."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = _import_onnx("onnx")
        stored = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return TrainingConfig.from_dict(json.loads(stored[_CONFIG_KEY]))
    extra = {_CONFIG_KEY: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return TrainingConfig.from_dict(json.loads(extra[_CONFIG_KEY]))


def export(model: torch.nn.Module, config: TrainingConfig, file_format: str, path: str | Path,
           tolerance: float = ABSOLUTE_TOLERANCE, history=(), authors=(),
           license_id: str | None = None) -> tuple[Path, float]:
    """Export and check: returns the path and the largest probability difference from PyTorch
    (ExportError where a probability differs by more than ``tolerance`` + RELATIVE_TOLERANCE of it).
    ``history``, ``authors`` and ``license_id`` (SPDX) go into bioimage.io packages."""
    if file_format not in FORMATS:
        raise ExportError(f"format {file_format!r} is not one of {', '.join(FORMATS)}")
    if file_format == "bioimageio":
        from .bioimageio import export_bioimageio

        return export_bioimageio(model, config, path, tolerance, history, authors, license_id)
    path = Path(path)
    written = (export_onnx if file_format == "onnx" else export_torchscript)(model, config, path)
    difference, agree = compare_with_pytorch(model, config, written, tolerance)
    if not agree:
        written.unlink()
        raise ExportError(f"{path}: the exported model's probabilities differ from PyTorch's by up to "
                          f"{difference:.2e} (tolerance {tolerance} + {RELATIVE_TOLERANCE} relative)")
    return written, difference
