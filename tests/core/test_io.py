import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_mia.core import ModelFileError, load_model, predict, save_model
from napari_mia.core.models import build_model
from tests.configs import fixed_config


def _model_file(tmp_path):
    torch.manual_seed(0)
    config = fixed_config(classes=["bg", "nucleus", "border"], downscale=0.5, color_mode="color")
    model = build_model(config).eval()
    return save_model(tmp_path / "model", model, config), model, config


def test_reloaded_model_in_a_new_process_predicts_identically(tmp_path):
    path, model, config = _model_file(tmp_path)
    assert path == tmp_path / "model"  # written under the name given
    image = np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    expected = predict(model, image, config, channel_axis=-1)
    script = f"""
import numpy as np
from napari_mia.core import load_model, predict
model, config, _ = load_model({str(path)!r})
assert config.classes == ["bg", "nucleus", "border"] and config.downscale == 0.5
image = np.load({str(tmp_path / "image.npy")!r})
np.save({str(tmp_path / "out.npy")!r}, predict(model, image, config, channel_axis=-1))
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    _, loaded_config, _ = load_model(path)
    assert loaded_config == config


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, suffix):
    marker = tmp_path / "pwned"
    crafted = tmp_path / f"evil{suffix}"
    crafted.write_bytes(pickle.dumps({"state_dict": _Exploit(str(marker))}))
    with pytest.raises(ModelFileError, match="not a napari-mia model"):
        load_model(crafted)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path, _, _ = _model_file(tmp_path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError):
        load_model(truncated)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(ModelFileError, match="not a napari-mia model"):
        load_model(foreign)


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path, model, config = _model_file(tmp_path)
    save_model(path, model, config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
