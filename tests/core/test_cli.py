import subprocess
import sys

import numpy as np
import tifffile

from napari_mia.core.cli import main
from napari_mia.core.io import load_model

from ..conftest import blobs


def _folders(tmp_path, n=3):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    for i in range(n):
        image, label = blobs(seed=i)
        tifffile.imwrite(images / f"im{i}.tif", image)
        tifffile.imwrite(labels / f"im{i}.tif", label * (i + 1))  # instance-like ids, binarized below
    return images, labels


def test_train_then_predict_writes_uint16_labels_and_history(tmp_path, capsys):
    images, labels = _folders(tmp_path)
    model = tmp_path / "m.safetensors"
    code = main(["train", "--images", str(images), "--labels", str(labels), "--out", str(model),
                 "--binarize", "--epochs", "2", "--batch-size", "4", "--patch-size", "64",
                 "--validation-fraction", "0.34", "--downscale", "0.5"])
    assert code == 0
    assert "validation: " in capsys.readouterr().out
    _, config, history = load_model(model)
    assert config.downscale == 0.5 and config.classes == ["background", "class 1"] and len(history) == 2
    assert (tmp_path / "m.history.csv").read_text().startswith("epoch,")
    assert main(["predict", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "out")]) == 0
    predicted = tifffile.imread(tmp_path / "out" / "im0.tif")
    assert predicted.dtype == np.uint16 and predicted.shape == (96, 96)
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "m2"),
                 "--from-model", str(model), "--binarize", "--epochs", "1", "--batch-size", "4"]) == 0


def test_the_model_name_given_to_train_is_the_name_predict_takes(tmp_path, capsys):
    images, labels = _folders(tmp_path, 1)
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "m"),
                 "--binarize", "--epochs", "1", "--batch-size", "2", "--patch-size", "64"]) == 0
    assert f"model saved to {tmp_path / 'm'} " in capsys.readouterr().err
    assert (tmp_path / "m").is_file() and (tmp_path / "m.history.csv").is_file()
    assert not (tmp_path / "m.safetensors").exists()
    assert main(["predict", "--model", str(tmp_path / "m"), "--images", str(images),
                 "--out", str(tmp_path / "out")]) == 0
    assert tifffile.imread(tmp_path / "out" / "im0.tif").shape == (96, 96)
    (tmp_path / "m").rename(tmp_path / "old.safetensors")  # as earlier versions named `--out old`
    assert main(["predict", "--model", str(tmp_path / "old"), "--images", str(images),
                 "--out", str(tmp_path / "out2")]) == 0


def test_max_minutes_stops_and_still_saves(tmp_path):
    images, labels = _folders(tmp_path, 1)
    model = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(model), "--binarize",
                 "--epochs", "10000", "--batch-size", "2", "--patch-size", "64", "--max-minutes", "0.01"]) == 0
    assert model.is_file()


def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(tmp_path):
    images, labels = _folders(tmp_path, 1)
    result = subprocess.run(
        [sys.executable, "-m", "napari_mia", "train", "--images", str(images), "--labels", str(labels),
         "--out", str(tmp_path / "m"), "--batch-size", "0"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["napari-mia: error: batch_size: must be an integer from 1 to "
                                                  "2048, got 0"]
    result = subprocess.run([sys.executable, "-m", "napari_mia", "predict", "--model", str(tmp_path / "none"),
                             "--images", str(images), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "no such model file" in result.stderr


def test_settings_reach_the_cli_through_flags_and_a_json_config(tmp_path):
    images, labels = _folders(tmp_path)
    settings = tmp_path / "settings.json"
    settings.write_text('{"lr_schedule": "step", "lr_step_every": 3, "augmentations": {"affine_probability": 0.4}}')
    model = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(model), "--binarize",
                 "--epochs", "1", "--batch-size", "4", "--patch-size", "64", "--config", str(settings),
                 "--optimizer", "adamw", "--loss", "focal", "--class-weighting", "auto",
                 "--val-images", str(images), "--val-labels", str(labels)]) == 0
    _, config, history = load_model(model)
    assert (config.optimizer, config.loss, config.class_weighting, config.lr_schedule) == (
        "adamw", "focal", "auto", "step")
    assert config.lr_step_every == 3 and config.augmentations.affine_probability == 0.4
    assert history[0].val_loss is not None  # the validation folder was used
    settings.write_text('{"optimiser": "adam"}')
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(model),
                 "--config", str(settings)]) == 2


def test_instance_detection_and_classification_from_the_command_line(tmp_path, capsys):
    import csv

    from ..conftest import instance_blobs

    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    rows, classes = [], []
    for i in range(3):
        image, instances, centres = instance_blobs(seed=i)
        tifffile.imwrite(images / f"im{i}.tif", image)
        tifffile.imwrite(labels / f"im{i}.tif", instances.astype(np.uint16))
        rows += [(f"im{i}.tif", y, x, "cell" if k % 2 else "blob") for k, (y, x) in enumerate(centres)]
        classes.append((f"im{i}", "a" if i % 2 else "b"))
    small = ["--epochs", "1", "--batch-size", "4", "--patch-size", "64", "--validation-fraction", "0"]

    model = tmp_path / "instance.safetensors"
    assert main(["train", "--application", "instance", "--images", str(images), "--labels", str(labels),
                 "--out", str(model), *small]) == 0
    assert main(["predict", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "ids"),
                 "--measure"]) == 0
    ids = tifffile.imread(tmp_path / "ids" / "im0.tif")
    assert ids.shape == (96, 96) and load_model(model)[1].application == "instance"
    with open(tmp_path / "ids" / "measurements.csv") as handle:
        table = list(csv.DictReader(handle))
    assert {r["image"] for r in table} <= {"im0", "im1", "im2"}
    assert list(table[0]) == ["image", "label", "class", "area", "centroid_y", "centroid_x", "mean_intensity",
                              "perimeter"] if table else True

    points = tmp_path / "points.csv"
    with open(points, "w", newline="") as handle:
        csv.writer(handle).writerows([("image", "y", "x", "class"), *rows])
    model = tmp_path / "detection.safetensors"
    assert main(["train", "--application", "detection", "--images", str(images), "--points", str(points),
                 "--out", str(model), *small]) == 0
    assert load_model(model)[1].classes == ["blob", "cell"]
    assert "napari-mia: points counted by each class's heatmap mass (no validation frame" in capsys.readouterr().err
    assert main(["predict", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "pts")]) == 0
    with open(tmp_path / "pts" / "points.csv") as handle:
        found = list(csv.DictReader(handle))
    assert list(found[0]) == ["image", "y", "x", "class", "score"] if found else True
    with open(tmp_path / "pts" / "counts.csv") as handle:  # each image's count per class, zeros included
        counts = list(csv.DictReader(handle))
    assert [list(row) for row in counts] == [["image", "blob", "cell"]] * 3
    assert {(row["image"], name): int(row[name]) for row in counts for name in ("blob", "cell")} == {
        (image, name): sum(r["image"] == image and r["class"] == name for r in found)
        for image in ("im0", "im1", "im2") for name in ("blob", "cell")}
    totals = [sum(r["class"] == name for r in found) for name in ("blob", "cell")]
    assert f"counted {totals[0]} blob, {totals[1]} cell in 3 image(s)" in capsys.readouterr().err

    table = tmp_path / "classes.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows([("image", "class"), *classes])
    model = tmp_path / "classes.safetensors"
    assert main(["train", "--application", "classification", "--images", str(images), "--classes", str(table),
                 "--out", str(model), "--epochs", "1", "--batch-size", "2", "--patch-size", "64",
                 "--validation-fraction", "0"]) == 0
    assert main(["predict", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "cls")]) == 0
    with open(tmp_path / "cls" / "classes.csv") as handle:
        predicted = list(csv.DictReader(handle))
    assert [r["image"] for r in predicted] == ["im0", "im1", "im2"]
    assert {r["class"] for r in predicted} <= {"a", "b"} and all(0 <= float(r["score"]) <= 1 for r in predicted)


def test_detection_without_points_is_a_one_line_error(tmp_path, capsys):
    images, _ = _folders(tmp_path, 1)
    assert main(["train", "--application", "detection", "--images", str(images), "--out", str(tmp_path / "m")]) == 2
    assert "--points CSV" in capsys.readouterr().err


def test_torchrun_trains_with_two_gloo_processes_into_one_model_file(tmp_path):
    images, labels = _folders(tmp_path, 2)
    model = tmp_path / "ddp.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "napari_mia",
         "train", "--images", str(images), "--labels", str(labels), "--out", str(model), "--binarize",
         "--epochs", "2", "--batch-size", "2", "--patch-size", "64", "--validation-fraction", "0",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )
    # torchrun's own traceback ends stderr; the processes' reasons (a Python error, gloo's "what():") come before
    reasons = [line for line in result.stderr.splitlines() if any(w in line for w in ("rror", "what()", "terminate"))]
    assert result.returncode == 0, "\n".join(reasons[:20]) + "\n...\n" + result.stderr[-1000:]
    assert "2 processes (DDP)" in result.stderr
    loaded, config, history = load_model(model)
    assert len(history) == 2 and not any(k.startswith("module.") for k in loaded.state_dict())


def test_colour_images_among_grey_ones_get_half_the_patches_and_the_cli_says_so(tmp_path, capsys):
    images, labels = _folders(tmp_path)
    rng = np.random.default_rng(0)
    for i, path in enumerate(sorted(images.iterdir())):
        grey = tifffile.imread(path)
        rgb = np.stack([grey] * 3, axis=-1)
        if i == 0:  # a stained look: the channels differ
            rgb = (rgb * rng.uniform(0.5, 1.0, 3)).astype(grey.dtype)
        tifffile.imwrite(path, rgb, photometric="rgb")
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "m"),
                 "--binarize", "--epochs", "1", "--batch-size", "2", "--patch-size", "64",
                 "--validation-fraction", "0"]) == 0
    assert "3 training (1 in colour: half the patches) and 0 validation frames" in capsys.readouterr().err
