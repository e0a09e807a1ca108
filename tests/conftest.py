from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def blobs(shape=(96, 96), n=6, radius=7, seed=0):
    """A grey image of bright discs on a noisy background, and its foreground labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint8)
    for _ in range(n):
        cy, cx = rng.integers(radius, shape[0] - radius), rng.integers(radius, shape[1] - radius)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    image = (labels * 150 + rng.normal(40, 12, shape)).clip(0, 255).astype(np.uint8)
    return image, labels


def instance_blobs(shape=(96, 96), n=6, radius=7, seed=0):
    """Bright discs, some touching: the image, object ids 1..n and the centres (n, 2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    instances = np.zeros(shape, np.int32)
    centres = []
    while len(centres) < n:
        centre = rng.integers(radius, np.array(shape) - radius)
        if all(np.hypot(*(centre - c)) > 1.6 * radius for c in centres):
            centres.append(centre)
            instances[((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2) & (instances == 0)] = len(centres)
    image = ((instances > 0) * 150 + rng.normal(40, 12, shape)).clip(0, 255).astype(np.uint8)
    return image, instances, np.array(centres, np.float64)


@pytest.fixture
def blob_pair():
    return blobs()


@pytest.fixture
def tiny_config():
    from tests.configs import fixed_config

    return fixed_config(epochs=2, batch_size=4, patch_size=64, validation_fraction=0.0, seed=1)


@pytest.fixture
def trained_samples(monkeypatch):
    """The training samples of every run from now on, as the Trainer receives them."""
    from napari_mia.core import train

    runs, original = [], train.Trainer.__init__

    def recording(self, config, train_samples, *args, **kwargs):
        runs.append(list(train_samples))
        original(self, config, train_samples, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "__init__", recording)
    return runs
