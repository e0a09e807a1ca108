"""Foreground IoU on the DSB2018 hold-out after the same training time: napari-mia's defaults versus a
random-forest pixel classifier on scikit-image features (the ilastik / APOC approach)."""

from __future__ import annotations

import time

import imageio.v3 as iio
import numpy as np
import tifffile
from dsb_semantic import DATA, N_VALIDATION

from napari_mia.core import Trainer, TrainingConfig, make_samples, predict
from napari_mia.core.auto import Example, resolve
from napari_mia.core.infer import run


def split(n_validation: int):
    ids = sorted(p.stem for p in (DATA / "images").glob("*.png"))
    held_out = list(np.random.default_rng(2018).permutation(ids)[:N_VALIDATION])
    train = [i for i in ids if i not in set(held_out)]
    return train, held_out[:n_validation]


def load(image_id: str):
    image = iio.imread(DATA / "images" / f"{image_id}.png")[..., :3]
    return image, tifffile.imread(DATA / "labels" / f"{image_id}.tif") > 0


def ious(predictions, truths) -> tuple[float, float]:
    """Foreground IoU pooled over the images, and the mean of the images' IoUs."""
    intersections = [np.logical_and(p, t).sum() for p, t in zip(predictions, truths)]
    unions = [np.logical_or(p, t).sum() for p, t in zip(predictions, truths)]
    per_image = [i / u if u else 1.0 for i, u in zip(intersections, unions)]
    return sum(intersections) / sum(unions), float(np.mean(per_image))


def napari_mia_iou(train_ids, validation, minutes: float) -> tuple[float, float]:
    """napari-mia's defaults (the settings left "auto" chosen from the training data, as the CLI does)."""
    start = time.perf_counter()
    loaded = [load(image_id) for image_id in train_ids]
    config, choices = resolve(TrainingConfig(max_minutes=minutes, validation_fraction=0.0),
                              (Example(image, -1, labels=truth.astype(np.uint8)) for image, truth in loaded))
    samples = []
    for image, truth in loaded:
        samples += make_samples(image, truth.astype(np.uint8), config, channel_axis=-1)
    print(f"  napari-mia: {'; '.join(c.field + ' ' + c.text for c in choices)}; data ready in "
          f"{time.perf_counter() - start:.0f} s (not counted)", flush=True)
    trainer = Trainer(config, samples)
    done = run(trainer.run())
    print(f"  napari-mia: {done.steps} batches in {done.seconds:.0f} s", flush=True)
    predictions = [predict(trainer.model, image, config, channel_axis=-1) > 0 for image, _ in validation]
    return ious(predictions, [truth for _, truth in validation])


def _features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    grey = image.mean(-1)
    grey = (grey - np.percentile(grey, 1)) / max(np.percentile(grey, 99.8) - np.percentile(grey, 1), 1e-6)
    return multiscale_basic_features(grey, sigma_min=1, sigma_max=16, num_sigma=5)


def random_forest_iou(train_ids, validation, minutes: float) -> float:
    """Pixels sampled for 40 % of the budget, then trees added ten at a time while the budget lasts."""
    from sklearn.ensemble import RandomForestClassifier

    budget, start, rng = 60 * minutes, time.perf_counter(), np.random.default_rng(0)
    features, targets = [], []
    for image_id in rng.permutation(train_ids):
        if time.perf_counter() - start > 0.4 * budget:
            break
        image, truth = load(image_id)
        pixels = rng.choice(truth.size, min(3000, truth.size), replace=False)
        features.append(_features(image).reshape(truth.size, -1)[pixels])
        targets.append(truth.reshape(-1)[pixels])
    features, targets = np.concatenate(features), np.concatenate(targets)
    forest = RandomForestClassifier(n_estimators=0, max_depth=16, n_jobs=2, random_state=0, warm_start=True)
    chunk_seconds = 0.0
    while time.perf_counter() - start + chunk_seconds < budget or forest.n_estimators == 0:
        chunk_start = time.perf_counter()
        forest.n_estimators += 10
        forest.fit(features, targets)
        chunk_seconds = time.perf_counter() - chunk_start
    print(f"  random forest: {len(targets)} pixels from {len(targets) // 3000} images, {forest.n_estimators} "
          f"trees, trained in {time.perf_counter() - start:.0f} s", flush=True)
    predictions = [forest.predict(_features(image).reshape(truth.size, -1)).reshape(truth.shape)
                   for image, truth in validation]
    return ious(predictions, [truth for _, truth in validation])


def compare(minutes: float, n_validation: int = N_VALIDATION) -> tuple[tuple[float, float], tuple[float, float]]:
    """((pooled, mean per image) foreground IoU of napari-mia, the same of the random forest)."""
    train_ids, validation_ids = split(n_validation)
    validation = [load(i) for i in validation_ids]
    return napari_mia_iou(train_ids, validation, minutes), random_forest_iou(train_ids, validation, minutes)
