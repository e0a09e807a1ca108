"""Instance post-processing on one trained model: AP@0.5 per image of DSB2018's hold-out, fluorescence and colour
apart, for foreground thresholds and seed heights (the network's probabilities computed once).

    python benchmarks/dsb_instance.py --minutes 15 --workdir W     # trains W/dsb.safetensors on the split
    python benchmarks/instance_thresholds.py --workdir W

The per-image scale of each image is the one chosen with the model's own thresholds.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
from pathlib import Path

import numpy as np
import tifffile
from dsb_instance import colour_stems

from napari_mia.core.data import resize_labels, split_frames
from napari_mia.core.files import read_image
from napari_mia.core.infer import frame_instances, run
from napari_mia.core.io import load_model
from napari_mia.core.metrics import InstanceScore
from napari_mia.core.postprocess import config_instances


def probabilities(work: Path) -> tuple:
    """(config, {image: (probabilities, scale, shape)}) of the hold-out, cached in ``work``."""
    cache = work / "probabilities.pkl"
    if not cache.exists():
        model, config, _ = load_model(work / "dsb.safetensors", "cpu")
        found = {}
        for path in sorted((work / "split" / "val" / "images").glob("*.png")):
            image, channel_axis = read_image(path)
            maps, _, scale = run(frame_instances(model, split_frames(image, channel_axis)[0], config, "cpu"))
            found[path.stem] = (maps.astype(np.float16), scale, image.shape[:2])
        cache.write_bytes(pickle.dumps((config, found)))
    return pickle.loads(cache.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--foreground", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--seed-height", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    work = Path(args.workdir)
    config, found = probabilities(work)
    truth_folder = work / "split" / "val" / "labels"
    truths = {stem: tifffile.imread(truth_folder / f"{stem}.tif") for stem in found}
    colour = colour_stems(truth_folder.parent / "images")
    looks = {"fluorescence": sorted(set(found) - colour), "colour": sorted(colour)}
    for foreground, height in itertools.product(args.foreground, args.seed_height):
        trial = config.replace(foreground_threshold=foreground, seed_height=height)
        scores = {}
        for look, stems in looks.items():
            score = InstanceScore()
            for stem in stems:
                maps, scale, shape = found[stem]
                score.add(truths[stem], resize_labels(config_instances(maps.astype(np.float32), trial, scale), shape))
            scores[look] = score.metrics()["ap50_per_image"]
        every = sum(scores[look] * len(stems) for look, stems in looks.items()) / len(found)
        print(f"foreground {foreground} seed height {height}: AP@0.5 per image {every:.3f} (fluorescence "
              f"{scores['fluorescence']:.3f}, colour {scores['colour']:.3f})", flush=True)


if __name__ == "__main__":
    main()
