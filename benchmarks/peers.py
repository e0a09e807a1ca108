"""napari-mia beside the tools a user would pick instead, on the same DSB2018 split, the same CPU minutes
and the same metric, in one run.

    python benchmarks/peers.py [--minutes 15] [--pixel-minutes 5] [--peer-python PYTHON] [--only ...]

Instances (AP@0.5, mean per image as StarDist reports it, and pooled): napari-mia's plain command
(`napari-mia train --application instance --max-minutes M`, then `napari-mia predict`), StarDist 2D and
Cellpose 3, both from scratch with their own defaults (benchmarks/peer_instances.py, run by
``--peer-python``: a Python with the `peers` extra; TensorFlow is best kept in a venv of its own).
Pixels (foreground IoU, mean per image): napari-mia's defaults against the random forest of
benchmarks/accuracy.py, ``--pixel-minutes`` each. The split is the seeded 100-image hold-out of the
other DSB2018 benchmarks. Prints ``name value target pass|fail`` lines, then the table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsb_instance import score
from dsb_semantic import DATA, make_split

BENCHMARKS = Path(__file__).resolve().parent
INSTANCE_TOOLS = ("napari-mia", "stardist", "cellpose")


def napari_mia_instances(train: Path, val: Path, out: Path, minutes: float) -> str:
    cli = [sys.executable, "-m", "napari_mia"]
    model = out.parent / "napari-mia.safetensors"
    start = time.perf_counter()
    subprocess.run([*cli, "train", "--application", "instance", "--images", str(train / "images"),
                    "--labels", str(train / "labels"), "--out", str(model), "--max-minutes", str(minutes)],
                   check=True, capture_output=True)
    trained = time.perf_counter() - start
    subprocess.run([*cli, "predict", "--model", str(model), "--images", str(val / "images"), "--out", str(out)],
                   check=True, capture_output=True)
    return f"napari-mia: trained in {trained:.0f} s (data loading included)"


def peer_instances(tool: str, python: str, train: Path, val: Path, out: Path, minutes: float) -> str:
    result = subprocess.run([python, str(BENCHMARKS / "peer_instances.py"), tool, "--train", str(train),
                             "--val", str(val), "--out", str(out), "--minutes", str(minutes)],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{tool} failed: {result.stderr[-1500:]}")
    return result.stdout.strip().splitlines()[-1]


def report(name: str, value: float, target: str, passed: bool) -> None:
    print(f"{name} {value:.4f} {target} {'pass' if passed else 'fail'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes of each instance tool")
    parser.add_argument("--pixel-minutes", type=float, default=5.0, help="minutes of napari-mia and the forest")
    parser.add_argument("--peer-python", default=sys.executable, help="the Python with StarDist and Cellpose")
    parser.add_argument("--only", nargs="*", default=[*INSTANCE_TOOLS, "pixels"])
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no DSB2018 data at {DATA}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="peers-"))
    train, val = make_split(work / "split")
    rows = []
    for tool in (t for t in INSTANCE_TOOLS if t in args.only):
        out = work / tool
        if tool == "napari-mia":
            said = napari_mia_instances(train, val, out, args.minutes)
        else:
            said = peer_instances(tool, args.peer_python, train, val, out, args.minutes)
        metrics = score(out, val / "labels")
        print(f"  {said}; AP@0.5 mean per image {metrics['ap50_per_image']:.4f}, pooled {metrics['ap50']:.4f}",
              flush=True)
        rows.append((f"DSB2018 instances, {args.minutes:g} min", tool, metrics["ap50_per_image"],
                     metrics["ap50_per_image"] / args.minutes))
    ours = next((r[2] for r in rows if r[1] == "napari-mia"), None)
    for _, tool, value, _ in rows:
        if tool != "napari-mia" and ours is not None:
            report(f"ap50_napari-mia_minus_{tool}", ours - value, "> 0", ours > value)
    if "pixels" in args.only:
        sys.path.insert(0, str(BENCHMARKS))
        from accuracy import compare

        (_, mia), (_, forest) = compare(args.pixel_minutes)
        rows += [(f"DSB2018 foreground, {args.pixel_minutes:g} min", "napari-mia", mia, mia / args.pixel_minutes),
                 (f"DSB2018 foreground, {args.pixel_minutes:g} min", "random forest", forest,
                  forest / args.pixel_minutes)]
        report("iou_napari-mia_minus_random_forest", mia - forest, "> 0", mia > forest)
    print("\n| task | tool | score (mean per image) | per CPU minute |\n|---|---|---|---|")
    for task, tool, value, per_minute in rows:
        print(f"| {task} | {tool} | {value:.3f} | {per_minute:.4f} |")


if __name__ == "__main__":
    main()
