"""DSB2018 nuclei, foreground vs background, trained and predicted through the CLI.

Makes a seeded hold-out split of ``shared/data/dsb2018_nuclei/train`` (100 of 664 images), trains with
``napari-mia train --binarize --max-minutes M`` on the rest, predicts the hold-out with
``napari-mia predict`` and prints the foreground IoU (pooled over all pixels, and the mean per image).

    python benchmarks/dsb_semantic.py --minutes 5 [extra train options...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018_nuclei" / "train"
N_VALIDATION = 100


def make_split(root: Path, data: Path = DATA) -> tuple[Path, Path]:
    ids = sorted(p.stem for p in (data / "images").glob("*.png"))
    held_out = set(np.random.default_rng(2018).permutation(ids)[:N_VALIDATION])
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (root / split / kind).mkdir(parents=True)
    for image_id in ids:
        split = "val" if image_id in held_out else "train"
        (root / split / "images" / f"{image_id}.png").symlink_to(data / "images" / f"{image_id}.png")
        (root / split / "labels" / f"{image_id}.tif").symlink_to(data / "labels" / f"{image_id}.tif")
    return root / "train", root / "val"


def foreground_iou(predicted: Path, truth: Path) -> tuple[float, float]:
    intersection = union = 0
    per_image = []
    for path in sorted(truth.glob("*.tif")):
        true_fg = tifffile.imread(path) > 0
        pred_fg = tifffile.imread(predicted / path.name) > 0
        i, u = np.logical_and(true_fg, pred_fg).sum(), np.logical_or(true_fg, pred_fg).sum()
        intersection, union = intersection + i, union + u
        per_image.append(i / u if u else 1.0)
    return intersection / union, float(np.mean(per_image))


def train_and_predict(default_minutes: float, prefix: str, train_options: list[str],
                      data: Path = DATA) -> tuple[Path, Path, float]:
    """Parse ``--minutes``/``--workdir``/``--tta`` (other options go to ``napari-mia train``), train on the seeded
    split of ``data`` through the CLI and predict the hold-out; returns (predicted folder, true labels, minutes)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=default_minutes)
    parser.add_argument("--workdir")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction,
                        help="predict with (or without) test-time augmentation; default: as the model says")
    args, extra = parser.parse_known_args()
    if not data.is_dir():
        sys.exit(f"no DSB2018 data at {data}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix=prefix))
    train, val = make_split(work / "split", data)
    model = work / "dsb.safetensors"
    cli = [sys.executable, "-m", "napari_mia"]
    command = [*cli, "train", "--images", str(train / "images"), "--labels", str(train / "labels"),
               "--out", str(model), *train_options, "--max-minutes", str(args.minutes), *extra]
    print(" ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    trained = (time.perf_counter() - start) / 60
    subprocess.run([*cli, "predict", "--model", str(model), "--images", str(val / "images"),
                    "--out", str(work / "predicted"), *({True: ["--tta"], False: ["--no-tta"]}.get(args.tta, []))],
                   check=True)
    return work / "predicted", val / "labels", trained


def main() -> None:
    predicted, truth, minutes = train_and_predict(5.0, "dsb-", ["--binarize"])
    pooled, mean = foreground_iou(predicted, truth)
    print(f"dsb_semantic: train {minutes:.1f} min (incl. loading), hold-out {N_VALIDATION} images: "
          f"foreground IoU pooled {pooled:.4f}, mean per image {mean:.4f}")


if __name__ == "__main__":
    main()
