"""The accuracy targets of the README's Results, through the benchmarks' CLI runs on the shared data.

Long (5 to 20 minutes each on a 2-core CPU), so marked slow and left out of the default run:
``python -m pytest -m slow tests/test_accuracy.py``. Each skips without its data.
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


def benchmark(script: str, *arguments: str, data: str, tmp_path: Path) -> str:
    if not (DATA / data).is_dir():
        pytest.skip(f"no {data} in {DATA}")
    command = [sys.executable, str(BENCHMARKS / script), *arguments, "--workdir", str(tmp_path / "work")]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def number_after(label: str, text: str) -> float:
    return float(re.search(re.escape(label) + r" (-?[0-9.]+)", text).group(1))


# The plain commands: nothing but the application and the data (the defaults choose the rest). Where the
# issue's target is missed, the bound is the figure reached (docs/results.md), so that a regression fails.

def test_dsb2018_instances_with_the_plain_command(tmp_path):
    """Target: AP@0.5 (mean per image) >= 0.85 in 15 CPU-minutes, >= 0.75 on the colour images. Reached:
    0.830 and 0.637 (both missed), so these bounds guard against regressions only."""
    out = benchmark("dsb_instance.py", "--minutes", "15", data="dsb2018_nuclei", tmp_path=tmp_path)
    assert number_after("AP@0.5 mean per image", out) >= 0.82, out
    assert number_after("AP@0.5 mean per image", out.split("dsb_instance colour")[1]) >= 0.58, out


def test_a_new_type_from_5_labelled_images(tmp_path):
    """Target (#28): AP@0.5 >= 0.75 from 5 images of a held-out type, 0.10 above a random forest on them.
    Reached: 0.507 from the model of the other type (three seeds, 2026-12-06), 0.135-0.147 above the
    forest; the bounds guard against regressions."""
    out = benchmark("new_types.py", "--ks", "5", data="dsb2018_nuclei", tmp_path=tmp_path)
    assert number_after("ap50_colour_k5_from_model", out) >= 0.47, out
    assert number_after("ap50_colour_k5_from_model_minus_forest", out) >= 0.10, out


def test_em_membranes_from_5_slices_beat_the_random_forest(tmp_path):
    """#28's second new type: ISBI 2012 EM membranes from 5 slices, the plain semantic command against a pixel
    forest on the same slices. Reached: membrane IoU 0.670 against 0.588 (the forest wins from 1 or 3)."""
    out = benchmark("new_types.py", "--em", "--ks", "5", data="isbi2012_em_membranes", tmp_path=tmp_path)
    assert number_after("iou_membranes_k5_imagenet_minus_forest", out) > 0.03, out


def test_dsb2018_foreground_beats_the_random_forest_given_the_same_5_minutes(tmp_path):
    out = benchmark("peers.py", "--only", "pixels", "--pixel-minutes", "5", data="dsb2018_nuclei", tmp_path=tmp_path)
    assert re.search(r"^iou_napari-mia_minus_random_forest \S+ > 0 pass$", out, re.MULTILINE), out


def test_bccd_detection_with_the_plain_command(tmp_path):
    """Target: F1 >= 0.90 for WBC and >= 0.85 for Platelets (30 px) in 15 CPU-minutes. Reached: 0.869 and
    0.781 (both missed; the flags of the README's best run give 0.903 and 0.829 in 20), so these bounds
    guard against regressions only."""
    out = benchmark("bccd.py", "detection", "--minutes", "15", data="bccd_blood_cells", tmp_path=tmp_path)
    f1 = {name: float(value) for name, value in re.findall(r"bccd_detection (\w+): .* F1 ([0-9.]+)", out)}
    assert f1["WBC"] >= 0.85, out
    assert f1["Platelets"] >= 0.75, out


def test_bccd_cell_crops_with_the_plain_command(tmp_path):
    out = benchmark("bccd.py", "classification", "--minutes", "10", data="bccd_blood_cells", tmp_path=tmp_path)
    assert number_after("accuracy", out) >= 0.97, out


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
                    "--out", str(model), "--max-minutes", "2", "--epochs", "1000", "--backbone", "resnet18"],
                   check=True, capture_output=True)
    exported = subprocess.run([*napari_mia, "export", "--model", str(model), "--format", "onnx", "--out",
                               str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "m.onnx").is_file()
