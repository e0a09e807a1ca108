"""BCCD blood cells: detection (box centres as points) and classification (box crops), through the CLI.

Uses the dataset's own split (``splits/train.txt`` for training, ``splits/val.txt`` for validation; the
test split is held back by the data provider).

    python benchmarks/bccd.py detection --minutes 8 [extra train options...]
    python benchmarks/bccd.py classification --minutes 4 [extra train options...]

Detection prints precision, recall and F1 per class, predictions matched one to one to box centres
within 30 px (RBC boxes are incomplete in BCCD, so RBC precision is understated). Classification prints
accuracy, per-class F1 and the confusion matrix of the validation crops.
"""

from __future__ import annotations

import argparse
import collections
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from napari_mia.core.metrics import classification_metrics, detection_scores, match_points

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd_blood_cells"
CLASSES = ("Platelets", "RBC", "WBC")
RADIUS = 30


def boxes() -> dict[str, list[tuple[str, int, int, int, int]]]:
    found = collections.defaultdict(list)
    with open(DATA / "annotations.csv") as handle:
        for row in csv.DictReader(handle):
            x0, y0, x1, y1 = (int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x1 > x0 and y1 > y0:
                found[Path(row["image"]).stem].append((row["label"], x0, y0, x1, y1))
    return found


def split(name: str) -> list[str]:
    return (DATA / "splits" / f"{name}.txt").read_text().split()


def link_images(stems: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        if not (folder / f"{stem}.jpg").exists():
            (folder / f"{stem}.jpg").symlink_to(DATA / "JPEGImages" / f"{stem}.jpg")
    return folder


def detection(work: Path, minutes: float, extra: list[str], cli: list[str]) -> None:
    annotations = boxes()
    train, val = link_images(split("train"), work / "train"), link_images(split("val"), work / "val")
    points = work / "points.csv"
    with open(points, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "y", "x", "class"))
        for stem in split("train"):
            for label, x0, y0, x1, y1 in annotations[stem]:
                writer.writerow((stem, (y0 + y1) / 2, (x0 + x1) / 2, label))
    model = work / "bccd-detection.safetensors"
    command = [*cli, "train", "--application", "detection", "--images", str(train), "--points", str(points),
               "--out", str(model), "--max-minutes", str(minutes), *extra]
    run(command)
    run([*cli, "predict", "--model", str(model), "--images", str(val), "--out", str(work / "predicted")])
    predicted = collections.defaultdict(list)
    with open(work / "predicted" / "points.csv") as handle:
        for row in csv.DictReader(handle):
            predicted[(row["image"], row["class"])].append((float(row["y"]), float(row["x"])))
    for name in CLASSES:
        counts = np.zeros(3, int)
        for stem in split("val"):
            truth = [((y0 + y1) / 2, (x0 + x1) / 2) for label, x0, y0, x1, y1 in annotations[stem] if label == name]
            counts += match_points(np.array(truth).reshape(-1, 2), np.array(predicted[(stem, name)]).reshape(-1, 2),
                                   RADIUS)
        scores = detection_scores(*counts)
        print(f"bccd_detection {name}: precision {scores['precision']:.3f} recall {scores['recall']:.3f} "
              f"F1 {scores['f1']:.3f} (TP {counts[0]}, FP {counts[1]}, FN {counts[2]}; {len(split('val'))} images)")


def write_crops(stems: list[str], folder: Path, table: Path, annotations) -> None:
    folder.mkdir(parents=True)
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("image", "class"))
        for stem in stems:
            image = iio.imread(DATA / "JPEGImages" / f"{stem}.jpg")
            for index, (label, x0, y0, x1, y1) in enumerate(annotations[stem]):
                name = f"{stem}_{index:03d}"
                iio.imwrite(folder / f"{name}.png", image[y0:y1, x0:x1])
                writer.writerow((name, label))


def classification(work: Path, minutes: float, extra: list[str], cli: list[str]) -> None:
    annotations = boxes()
    write_crops(split("train"), work / "train", work / "train.csv", annotations)
    write_crops(split("val"), work / "val", work / "val.csv", annotations)
    model = work / "bccd-classes.safetensors"
    run([*cli, "train", "--application", "classification", "--images", str(work / "train"),
         "--classes", str(work / "train.csv"), "--out", str(model), "--max-minutes", str(minutes),
         *extra])
    run([*cli, "predict", "--model", str(model), "--images", str(work / "val"), "--out", str(work / "predicted")])
    with open(work / "val.csv") as handle:
        truth = {row["image"]: row["class"] for row in csv.DictReader(handle)}
    with open(work / "predicted" / "classes.csv") as handle:
        predicted = {row["image"]: row["class"] for row in csv.DictReader(handle)}
    matrix = np.zeros((len(CLASSES), len(CLASSES)), int)
    for name, label in truth.items():
        matrix[CLASSES.index(label), CLASSES.index(predicted[name])] += 1
    metrics = classification_metrics(matrix, list(CLASSES))
    print(f"bccd_classification: accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}, "
          + ", ".join(f"F1 {c} {metrics['f1_' + c]:.3f}" for c in CLASSES) + f" ({matrix.sum()} crops)")
    print("confusion matrix (rows true, columns predicted: " + ", ".join(CLASSES) + ")\n" + str(matrix))


def run(command: list[str]) -> None:
    print(" ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=("detection", "classification"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--workdir")
    args, extra = parser.parse_known_args()
    if not DATA.is_dir():
        sys.exit(f"no BCCD data at {DATA}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"bccd-{args.task}-"))
    start = time.perf_counter()
    (detection if args.task == "detection" else classification)(work, args.minutes, extra,
                                                                [sys.executable, "-m", "napari_mia"])
    print(f"bccd_{args.task}: {(time.perf_counter() - start) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
