"""bioimage.io model packages: export (ONNX + TorchScript weights, test tensors, cover, docs) and
import back. The napari-mia model file travels inside as an attachment, so importing restores the
exact model, config and history; other tools run the ONNX or TorchScript weights.

Needs the optional ``bioimageio.spec`` package (``pip install "napari-mia[bioimageio]"``).
"""

from __future__ import annotations

import getpass
import importlib.metadata
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

import napari_mia

from .config import INSTANCE_TARGETS, TrainingConfig
from .export import (
    ABSOLUTE_TOLERANCE,
    RELATIVE_TOLERANCE,
    ExportError,
    disagreement,
    export_onnx,
    export_torchscript,
    on_cpu,
    run_exported,
)
from .io import load_model, save_model

MIA_CITATION = "Koerber, N. MIA is an open-source standalone deep learning application for microscopic image analysis."


def project_license() -> str:
    """napari-mia's license, as its installed metadata says."""
    try:
        return importlib.metadata.metadata("napari-mia").get("License") or "BSD-3-Clause"
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "BSD-3-Clause"


def _output_names(config: TrainingConfig) -> list[str]:
    names = list(INSTANCE_TARGETS) if config.kind.object_ids else list(config.classes)
    return [_identifier(name, index) for index, name in enumerate(names)]


def _identifier(name: str, index: int) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.strip()).strip("_")
    return cleaned if cleaned and cleaned[0].isalpha() else f"c{index}_{cleaned}".rstrip("_")


def _scale_range(images: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """bioimage.io's scale_range preprocessing, per sample and channel, as the package declares it."""
    low, high = np.percentile(images, config.normalize_percentiles, axis=(2, 3), keepdims=True)
    return ((images - low) / (high - low + 1e-6)).astype(np.float32)


def _test_image(config: TrainingConfig) -> np.ndarray:
    """Bright discs on a dim noisy background: a small microscopy-like test input."""
    size = config.patch_size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    image = rng.normal(20, 4, (size, size))
    for _ in range(4):
        cy, cx = rng.integers(8, size - 8, 2)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 10) ** 2] += 100
    return np.repeat(image[None, None], config.input_channels, axis=1).astype(np.float32)


def _cover(image: np.ndarray, output: np.ndarray, path: Path) -> Path:
    import imageio.v3 as iio

    left = image[0, 0]
    left = (255 * (left - left.min()) / max(np.ptp(left), 1e-6)).astype(np.uint8)
    if output.ndim == 4:
        right = (255 * output[0].argmax(0) / max(1, output.shape[1] - 1)).astype(np.uint8)
    else:
        right = np.full_like(left, 255 * int(output[0].argmax()) // max(1, output.shape[1] - 1))
    iio.imwrite(path, np.concatenate([left, np.full((left.shape[0], 4), 255, np.uint8), right], axis=1))
    return path


def export_bioimageio(model: torch.nn.Module, config: TrainingConfig, path: str | Path,
                      tolerance: float = ABSOLUTE_TOLERANCE, history=(), authors=(),
                      license_id: str | None = None) -> tuple[Path, float]:
    """Write a bioimage.io model package (.zip) and validate it with bioimageio.spec; returns the path
    and the largest probability difference between the package's ONNX/TorchScript weights and PyTorch.
    ``authors`` (names) and ``license_id`` (SPDX) describe the model; the license defaults to
    napari-mia's own."""
    try:
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5 as spec
    except ImportError as error:
        raise ExportError('bioimage.io export needs bioimageio.spec: pip install "napari-mia[bioimageio]"') from error
    path = Path(path)
    model = on_cpu(model)
    with tempfile.TemporaryDirectory(prefix="napari-mia-bioimageio-") as folder:  # the package copies it all
        work = Path(folder)
        test_input = _test_image(config)
        with torch.inference_mode():
            test_output = model(torch.from_numpy(_scale_range(test_input, config))).numpy()
        np.save(work / "test_input.npy", test_input)
        np.save(work / "test_output.npy", test_output)
        onnx_path = export_onnx(model, config, work / "weights.onnx")
        torchscript_path = export_torchscript(model, config, work / "weights.pt")
        checks = [disagreement(test_output, run_exported(p, _scale_range(test_input, config)), config, tolerance)
                  for p in (onnx_path, torchscript_path)]
        difference = max(worst for worst, _ in checks)
        if not all(agree for _, agree in checks):
            raise ExportError(f"exported weights' probabilities differ from PyTorch's by up to {difference:.2e} "
                              f"(tolerance {tolerance} + {RELATIVE_TOLERANCE} relative)")
        mia_file = save_model(work / "napari-mia-model.safetensors", model, config, history)
        (work / "README.md").write_text(_documentation(config))

        channels = [spec.Identifier(f"channel{i}") for i in range(config.input_channels)]
        if config.kind.image_classes:
            size = config.patch_size
            input_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=channels),
                          spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
                          spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)]
            output_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=_output_names(config))]
        else:
            step = spec.ParameterizedSize(min=32, step=32)
            input_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=channels),
                          spec.SpaceInputAxis(id=spec.AxisId("y"), size=step),
                          spec.SpaceInputAxis(id=spec.AxisId("x"), size=step)]
            output_axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=_output_names(config)),
                           *(spec.SpaceOutputAxis(id=spec.AxisId(a), size=spec.SizeReference(
                               tensor_id=spec.TensorId("input"), axis_id=spec.AxisId(a))) for a in ("y", "x"))]
        low, high = config.normalize_percentiles
        description = spec.ModelDescr(
            name=f"napari-mia {config.application} {config.architecture} {config.backbone}",
            description=f"{config.application} model trained with napari-mia; outputs "
                        f"{'heatmap' if config.kind.points else 'class'} logits.",
            authors=[spec.Author(name=name) for name in authors] or [spec.Author(name=getpass.getuser())],
            cite=[spec.CiteEntry(text=MIA_CITATION, url="https://github.com/MIAnalyzer/MIA")],
            license=spec.LicenseId(license_id or project_license()),
            documentation=spec.FileDescr(source=work / "README.md"),
            covers=[spec.FileDescr(source=_cover(test_input, test_output, work / "cover.png"))],
            tags=["napari-mia", config.application, "2d"],
            attachments=[spec.FileDescr(source=mia_file)],
            inputs=[spec.InputTensorDescr(
                id=spec.TensorId("input"), axes=input_axes, test_tensor=spec.FileDescr(source=work / "test_input.npy"),
                data=spec.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[spec.ScaleRangeDescr(kwargs=spec.ScaleRangeKwargs(
                    axes=[spec.AxisId("y"), spec.AxisId("x")], min_percentile=low, max_percentile=high))],
            )],
            outputs=[spec.OutputTensorDescr(
                id=spec.TensorId("output"), axes=output_axes,
                test_tensor=spec.FileDescr(source=work / "test_output.npy"),
            )],
            weights=spec.WeightsDescr(
                onnx=spec.OnnxWeightsDescr(source=onnx_path, opset_version=17),
                torchscript=spec.TorchscriptWeightsDescr(source=torchscript_path,
                                                         pytorch_version=spec.Version(torch.__version__.split("+")[0])),
            ),
            config={"napari_mia": config.to_dict()},
        )
        save_bioimageio_package(description, output_path=path)
        return path, difference


def validate_bioimageio(path: str | Path) -> str:
    """bioimageio.spec's verdict on a package: "valid-format" (or better) when it may be shared."""
    from bioimageio.spec import load_description

    description = load_description(str(path))
    return description.validation_summary.status


def _documentation(config: TrainingConfig) -> str:
    return f"""# napari-mia {config.application} model

Trained with napari-mia {napari_mia.__version__} ({config.architecture}, {config.backbone} encoder,
{config.input_channels} input channel(s), classes: {", ".join(config.classes)}).

## Input
The image ({config.color_mode}) normalised per channel so that percentile {config.normalize_percentiles[0]}
maps to 0 and {config.normalize_percentiles[1]} to 1, resized by Down Scaling {config.downscale}; height and
width multiples of 32.

## Output
{"Logits of background, interior and boundary; napari-mia turns them into object ids by seeded watershed."
 if config.kind.object_ids else "Heatmap logits per class (sigmoid); peaks are objects."
 if config.kind.points else "Logits per class (softmax)."}

The napari-mia model file (`napari-mia-model.safetensors`) is attached: the napari-mia widget and command
line import this package back with every setting.
"""


def load_bioimageio(path: str | Path, device: torch.device | str = "cpu"):
    """(model, config, history) from a package napari-mia exported."""
    path = Path(path)
    with zipfile.ZipFile(path) as package:
        names = [n for n in package.namelist() if n.endswith(".safetensors")]
        if not names:
            raise ExportError(f"{path} is a bioimage.io package without a napari-mia model file; "
                              "only packages exported by napari-mia can be imported")
        with tempfile.TemporaryDirectory(prefix="napari-mia-import-") as work:
            package.extract(names[0], work)
            return load_model(Path(work) / names[0], device)
