"""Prediction of an image that never sits in memory: a SIZE x SIZE uint16 zarr image through the CLI.

Writes a zarr image of bright blobs on a textured background, saves an (untrained, default
architecture) model, runs ``napari-mia predict`` on the zarr in a child process and prints the child's
peak memory (the labels go into a zarr as bands of tiles finish). With ``--check N`` it also predicts an
N x N crop both from zarr and in memory (numpy) and prints whether the two label images are identical.

    python benchmarks/big_zarr.py --size 20000 --check 4096
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from napari_mia.core.config import TrainingConfig
from napari_mia.core.infer import predict
from napari_mia.core.io import save_model
from napari_mia.core.models import build_model

CHUNK = 2048


def write_image(path: Path, size: int) -> zarr.Array:
    image = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(CHUNK, CHUNK), dtype="uint16")
    rng = np.random.default_rng(0)
    for top in range(0, size, CHUNK):
        for left in range(0, size, CHUNK):
            height, width = min(CHUNK, size - top), min(CHUNK, size - left)
            block = rng.normal(1000, 200, (height, width))
            for y, x in rng.integers(0, (height, width), size=(height * width // 4000, 2)):
                block[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] += 3000
            image[top : top + height, left : left + width] = block.clip(0, 65535).astype(np.uint16)
    return image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--check", type=int, default=0, help="also compare zarr and in-memory results on an N² crop")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="big-zarr-"))
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_image(folder / "big.zarr", args.size)
    print(f"big_zarr: wrote a {args.size}² uint16 zarr image ({args.size**2 * 2 / 2**30:.2f} GiB) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    torch.manual_seed(0)
    config = TrainingConfig(backbone="resnet18", pretrained=False, color_mode="mono", downscale=1.0)
    model_path = save_model(work / "model.safetensors", build_model(config), config)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_mia", "predict", "--model", str(model_path), "--images",
                    str(folder), "--out", str(work / "out"), "--device", "cpu"], check=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    labels = zarr.open_array(str(work / "out" / "big.zarr"), mode="r")
    print(f"big_zarr: predicted {args.size}² in {seconds / 60:.1f} min ({args.size**2 / seconds / 1e6:.2f} MP/s), "
          f"peak memory of the predicting process {peak:.2f} GiB (target < 2), output {labels.shape} {labels.dtype}")
    if args.check:
        crop = args.check
        source = zarr.open_array(str(folder / "big.zarr"), mode="r")
        sub = zarr.open_array(str(work / "crop.zarr"), mode="w", shape=(crop, crop), chunks=(CHUNK, CHUNK),
                              dtype="uint16")
        sub[:] = source[:crop, :crop]
        model = build_model(config)
        out = zarr.open_array(str(work / "crop-out.zarr"), mode="w", shape=(crop, crop), chunks=(CHUNK, CHUNK),
                              dtype="uint16")
        predict(model, sub, config, out=out)
        in_memory = predict(model, np.asarray(sub[:]), config)
        print(f"big_zarr: {crop}² crop predicted from zarr and in memory: "
              f"{'identical' if np.array_equal(out[:], in_memory) else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
