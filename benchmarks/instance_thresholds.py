"""Instance post-processing on one trained model: AP@0.5 per image of DSB2018's hold-out, fluorescence and colour
apart, for foreground thresholds, seed thresholds and seed heights (the network's probabilities computed once).

    python benchmarks/dsb_instance.py --minutes 15 --workdir W     # trains W/dsb.safetensors on the split
    python benchmarks/instance_thresholds.py --workdir W [--seed-threshold 0.3 0.5 0.7] [--enlarge 1.25 1.5]

The per-image scale of each image is the one chosen with the model's own thresholds; ``--enlarge F`` also
predicts every image at F times that scale, with the model's thresholds.
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
from napari_mia.core.infer import frame_instances, frame_probabilities, run
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
    parser.add_argument("--seed-threshold", type=float, nargs="+", help="default: the model's")
    parser.add_argument("--enlarge", type=float, nargs="+", default=[], metavar="F")
    args = parser.parse_args()
    work = Path(args.workdir)
    config, found = probabilities(work)
    truth_folder = work / "split" / "val" / "labels"
    truths = {stem: tifffile.imread(truth_folder / f"{stem}.tif") for stem in found}
    colour = colour_stems(truth_folder.parent / "images")
    looks = {"fluorescence": sorted(set(found) - colour), "colour": sorted(colour)}

    def report(name: str, found: dict, trial) -> None:
        scores = {}
        for look, stems in looks.items():
            score = InstanceScore()
            for stem in stems:
                maps, scale, shape = found[stem]
                score.add(truths[stem], resize_labels(config_instances(maps.astype(np.float32), trial, scale), shape))
            scores[look] = score.metrics()["ap50_per_image"]
        every = sum(scores[look] * len(stems) for look, stems in looks.items()) / len(found)
        print(f"{name}: AP@0.5 per image {every:.3f} (fluorescence {scores['fluorescence']:.3f}, colour "
              f"{scores['colour']:.3f})", flush=True)

    seed_thresholds = args.seed_threshold or [config.seed_threshold]
    for foreground, seed, height in itertools.product(args.foreground, seed_thresholds, args.seed_height):
        report(f"foreground {foreground} seed {seed} seed height {height}", found,
               config.replace(foreground_threshold=foreground, seed_threshold=seed, seed_height=height))
    for factor in args.enlarge:
        report(f"each image at {factor}x its scale", enlarged(work, config, found, factor), config)


def enlarged(work: Path, config, found: dict, factor: float) -> dict:
    """``found``'s probabilities predicted again at ``factor`` times each image's scale."""
    model = load_model(work / "dsb.safetensors", "cpu")[0]
    again = {}
    for stem, (_, scale, shape) in found.items():
        image, channel_axis = read_image(work / "split" / "val" / "images" / f"{stem}.png")
        frame = split_frames(image, channel_axis)[0]
        again[stem] = (run(frame_probabilities(model, frame, config, "cpu", scale=scale * factor)), scale * factor,
                       shape)
    return again


if __name__ == "__main__":
    main()
