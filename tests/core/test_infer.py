import json
import subprocess
import sys

import numpy as np
import torch

from napari_mia.core import predict
from napari_mia.core.infer import fit_tile, iter_probabilities, prediction_options, run, tile_starts
from napari_mia.core.models import build_model
from tests.configs import fixed_config


def _whole_forward(model, image):
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()


def test_tile_starts_cover_the_image_on_the_32_pixel_grid():
    assert tile_starts(640, 256, 64) == [0, 192, 384]
    assert tile_starts(4096, 1024, 64) == [0, 768, 1536, 2304, 3072]  # spread evenly, no sliver
    for length in range(288, 3000, 32):
        starts = tile_starts(length, 256, 64)
        assert all(s % 32 == 0 for s in starts) and starts[-1] == length - 256
        assert all(0 < b - a <= 256 - 64 for a, b in zip(starts, starts[1:]))
    assert tile_starts(200, 256, 64) == [0]
    assert fit_tile(4096, 1536, 64) == 1408 and tile_starts(4096, 1408, 64) == [0, 1344, 2688]
    assert fit_tile(1000, 1536, 64) == 1000


def test_image_that_fits_one_tile_matches_a_whole_image_forward():
    torch.manual_seed(0)
    model = build_model(fixed_config()).eval()
    image = np.random.default_rng(0).random((1, 256, 320)).astype(np.float32)
    tiled = run(iter_probabilities(model, image, tile=512, overlap=64))
    np.testing.assert_allclose(tiled, _whole_forward(model, image), atol=1e-4)


def test_bf16_prediction_runs_under_autocast_and_stays_close_to_fp32(monkeypatch):
    from napari_mia.core import models

    torch.manual_seed(0)
    config = fixed_config()
    model = build_model(config).eval()
    image = np.random.default_rng(0).random((1, 256, 320)).astype(np.float32)
    autocast_per_batch = []
    model.register_forward_hook(lambda *_: autocast_per_batch.append(torch.is_autocast_enabled("cpu")))
    monkeypatch.setattr(models, "cpu_has_bf16_units", lambda: True)
    bf16 = run(iter_probabilities(model, image, **prediction_options(config, "cpu", 512)))
    fp32_config = config.replace(mixed_precision=False)
    fp32 = run(iter_probabilities(model, image, **prediction_options(fp32_config, "cpu", 512)))
    assert autocast_per_batch == [True, False]
    np.testing.assert_allclose(fp32, _whole_forward(model, image), atol=1e-4)
    np.testing.assert_allclose(bf16, fp32, atol=0.03)
    assert not np.array_equal(bf16, fp32)


def test_blending_has_no_seams_when_the_overlap_covers_the_receptive_field():
    """Tiles smaller than the image, blended, equal the whole-image forward of a local model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    image = np.random.default_rng(1).random((1, 320, 416)).astype(np.float32)
    tiled = run(iter_probabilities(model, image, tile=128, overlap=64, batch_size=3))
    np.testing.assert_allclose(tiled, _whole_forward(model, image), atol=1e-5)
    abutting = run(iter_probabilities(model, image[:, :256, :256], tile=128, overlap=0))
    assert abutting.shape == (3, 256, 256) and np.isfinite(abutting).all()


def test_prediction_shapes_for_downscaled_stacks_and_rgb():
    torch.manual_seed(0)
    config = fixed_config(downscale=0.5)
    model = build_model(config).eval()
    stack = np.random.default_rng(0).integers(0, 4000, (2, 100, 150), dtype=np.uint16)
    labels = predict(model, stack, config)
    assert labels.shape == (2, 100, 150) and labels.dtype == np.uint16
    rgb = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    assert predict(model, rgb, fixed_config(downscale=0.5), channel_axis=-1).shape == (64, 96)


def test_sparse_models_predict_in_the_users_label_convention():
    torch.manual_seed(0)
    config = fixed_config(sparse_labels=True)
    labels = predict(build_model(config).eval(), np.zeros((64, 64), np.uint8), config)
    assert labels.min() >= 1


def test_4096_square_prediction_runs_in_bounded_memory():
    script = """
import json, resource, numpy as np, torch
from napari_mia.core import TrainingConfig, predict
from napari_mia.core.models import build_model
torch.manual_seed(0)
config = TrainingConfig(backbone="tu-test_efficientnet", decoder_channels=(16,) * 5, pretrained=False,
                        color_mode="mono", downscale=1.0)
image = np.random.default_rng(0).integers(0, 65535, (4096, 4096), dtype=np.uint16)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
labels = predict(build_model(config).eval(), image, config)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": labels.shape, "before_mb": before / 1024, "after_mb": after / 1024}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [4096, 4096]
    # Image, probabilities and weights are ~0.3 GB; a whole-image forward of this small network needs 4.6 GB.
    assert result["after_mb"] < 3000, result


def test_cpu_forwards_one_big_tile_at_a_time_and_gpus_batch_them():
    # A second 1024² tile per forward costs ~0.4 GB of activations on a CPU for no speed; it decided
    # whether a 20000² zarr image is predicted within 2 GB (benchmarks/big_zarr.py).
    config = fixed_config(batch_size=16)
    assert prediction_options(config, "cpu", tile=1024)["batch_size"] == 1
    assert prediction_options(config, "cpu", tile=512)["batch_size"] == 4
    assert prediction_options(config, "cuda:0", tile=1024)["batch_size"] == 4


def test_chunked_upscaling_equals_torch_bilinear():
    from napari_mia.core.infer import upscale_rows

    probabilities = np.random.default_rng(2).random((3, 37, 53)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(probabilities)[None], size=(101, 150),
                                               mode="bilinear", align_corners=False)[0].numpy()
    chunks = np.concatenate([upscale_rows(probabilities, (101, 150), a, min(a + 16, 101))
                             for a in range(0, 101, 16)], axis=1)
    np.testing.assert_allclose(chunks, expected, atol=1e-5)


def test_labels_stream_into_a_given_output_array():
    torch.manual_seed(0)
    config = fixed_config(tile_overlap=64)
    model = build_model(config).eval()
    image = np.random.default_rng(3).integers(0, 255, (700, 300), dtype=np.uint8)
    expected = predict(model, image, config, tile=256)
    out = np.full((700, 300), 99, np.uint16)
    assert predict(model, image, config, tile=256, out=out) is out
    np.testing.assert_array_equal(out, expected)
    from napari_mia.core.data import prepare_image

    whole = run(iter_probabilities(model, prepare_image(image[None], config), **prediction_options(config, "cpu", 256)))
    assert whole.shape == (2, 700, 300)
    np.testing.assert_array_equal(whole.argmax(0), expected)
