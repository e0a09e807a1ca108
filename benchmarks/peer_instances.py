"""StarDist or Cellpose trained from scratch within a time budget on a folder split, run by peers.py in the
Python that has them (`pip install -e ".[peers]"`, ideally in a venv of its own: TensorFlow comes with StarDist).

    python benchmarks/peer_instances.py stardist|cellpose --train DIR --val DIR --out DIR --minutes M

DIR/images holds the images, DIR/labels the object ids (same stems, .tif). Writes OUT/<stem>.tif label
images for the validation images and prints one line: "<tool>: <what it did>". Both get the grey image
normalised between its 1st and 99.8th percentiles, as their DSB2018 examples do; the clock counts all
training work (Cellpose's flows included), not the threshold choice or the prediction.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile


def read_folder(folder: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    stems, images, labels = [], [], []
    for path in sorted((folder / "images").iterdir()):
        image = iio.imread(path)
        grey = image[..., :3].mean(-1) if image.ndim == 3 else image.astype(np.float32)
        low, high = np.percentile(grey, (1, 99.8))
        stems.append(path.stem)
        images.append(((grey - low) / max(high - low, 1e-6)).astype(np.float32))
        labels.append(tifffile.imread(folder / "labels" / f"{path.stem}.tif").astype(np.int32))
    return stems, images, labels


def stardist(train: Path, val: Path, out: Path, minutes: float, work: Path) -> str:
    """StarDist 2D with its example configuration (32 rays, grid 2), its own 15 % validation split for
    the loss and the thresholds (at least one image; a single image is both)."""
    from keras.callbacks import Callback
    from stardist import fill_label_holes
    from stardist.models import Config2D, StarDist2D

    start = time.perf_counter()
    _, images, labels = read_folder(train)
    labels = [fill_label_holes(y) for y in labels]
    order = np.random.default_rng(42).permutation(len(images))
    n_val = max(1, round(0.15 * len(images)))
    x_val, y_val = [images[i] for i in order[:n_val]], [labels[i] for i in order[:n_val]]
    x_train, y_train = [images[i] for i in order[n_val:]], [labels[i] for i in order[n_val:]]
    if not x_train:  # one labelled image: it trains and chooses the thresholds
        x_train, y_train = x_val, y_val
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, train_tensorboard=False)  # TensorBoard: not installed
    model = StarDist2D(config, name="stardist", basedir=str(work))
    model.prepare_for_training()
    budget = 60 * minutes
    steps = []

    class Budget(Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)
            if time.perf_counter() - start > budget:
                self.model.stop_training = True

    model.callbacks.append(Budget())
    model.train(x_train, y_train, validation_data=(x_val, y_val), epochs=10_000, steps_per_epoch=50)
    trained = time.perf_counter() - start
    model.optimize_thresholds(x_val, y_val)
    stems, images, _ = read_folder(val)
    for stem, image in zip(stems, images):
        prediction, _ = model.predict_instances(image)
        tifffile.imwrite(out / f"{stem}.tif", prediction.astype(np.uint16))
    return f"stardist: {len(steps)} batches in {trained:.0f} s, thresholds {model.thresholds}"


def cellpose(train: Path, val: Path, out: Path, minutes: float, work: Path) -> str:
    """Cellpose 3 from scratch (its CPnet, no weights loaded: nothing downloads), its training defaults
    (AdamW, learning rate 0.005, 224-px crops rescaled to a 30-px mean diameter), as many epochs as fit
    in the budget after one timed epoch."""
    import torch
    from cellpose import dynamics, models
    from cellpose import train as cellpose_train

    start = time.perf_counter()
    _, images, labels = read_folder(train)
    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, diam_mean=30.0)
    flows = dynamics.labels_to_flows(labels, device=torch.device("cpu"))  # what training learns, once
    epochs = 0

    def run(n_epochs: int) -> None:
        cellpose_train.train_seg(model.net, train_data=images, train_labels=flows, channels=[0, 0],
                                 normalize=False, n_epochs=n_epochs, save_path=str(work), min_train_masks=1,
                                 model_name="cellpose")

    epoch_start = time.perf_counter()
    run(1)
    epochs, epoch_seconds = 1, time.perf_counter() - epoch_start
    remaining = int((60 * minutes - (time.perf_counter() - start)) // epoch_seconds)
    if remaining > 0:
        run(remaining)
        epochs += remaining
    trained = time.perf_counter() - start
    diameter = float(model.net.diam_labels.item())
    stems, images, _ = read_folder(val)
    for stem, image in zip(stems, images):
        masks, *_ = model.eval(image, diameter=diameter, channels=[0, 0], normalize=False)
        tifffile.imwrite(out / f"{stem}.tif", masks.astype(np.uint16))
    return f"cellpose: {epochs} epochs in {trained:.0f} s, predicted at diameter {diameter:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tool", choices=("stardist", "cellpose"))
    for name in ("train", "val", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out.parent / f"{args.tool}-work"
    work.mkdir(exist_ok=True)
    print({"stardist": stardist, "cellpose": cellpose}[args.tool](args.train, args.val, args.out, args.minutes, work),
          flush=True)


if __name__ == "__main__":
    main()
