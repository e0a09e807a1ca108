"""DSB2018 nuclei instance segmentation, trained and predicted through the CLI.

Same seeded hold-out split as ``dsb_semantic.py`` (100 of 664 images). Trains with
``napari-mia train --application instance --max-minutes M``, predicts the hold-out with
``napari-mia predict`` and prints AP@0.5 and AP@0.5:0.95 (TP / (TP + FP + FN), objects matched one to one
by IoU with the Hungarian algorithm, pooled over all hold-out objects as StarDist reports it; and the
mean per image).

    python benchmarks/dsb_instance.py --minutes 15 [extra train options...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile
from dsb_semantic import DATA, N_VALIDATION, make_split

from napari_mia.core.metrics import InstanceScore


def score(predicted: Path, truth: Path) -> dict[str, float]:
    instance_score = InstanceScore()
    for path in sorted(truth.glob("*.tif")):
        instance_score.add(tifffile.imread(path), tifffile.imread(predicted / path.name))
    return instance_score.metrics()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--workdir")
    args, extra = parser.parse_known_args()
    if not DATA.is_dir():
        sys.exit(f"no DSB2018 data at {DATA}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsb-instance-"))
    train, val = make_split(work / "split")
    model = work / "dsb-instance.safetensors"
    cli = [sys.executable, "-m", "napari_mia"]
    command = [*cli, "train", "--application", "instance", "--images", str(train / "images"),
               "--labels", str(train / "labels"), "--out", str(model), "--max-minutes", str(args.minutes),
               "--validation-fraction", "0", *extra]
    print(" ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    trained = time.perf_counter() - start
    subprocess.run([*cli, "predict", "--model", str(model), "--images", str(val / "images"),
                    "--out", str(work / "predicted")], check=True)
    metrics = score(work / "predicted", val / "labels")
    print(f"dsb_instance: train {trained / 60:.1f} min (incl. loading), hold-out {N_VALIDATION} images: "
          f"AP@0.5 {metrics['ap50']:.4f}, AP@0.5:0.95 {metrics['ap50_95']:.4f}, "
          f"AP@0.5 mean per image {metrics['ap50_per_image']:.4f}")


if __name__ == "__main__":
    main()
