import pytest
import torch

from napari_mia.core import TrainingConfig
from napari_mia.core.models import PretrainedWeightsError, build_model


def test_missing_weights_give_a_clear_message_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PretrainedWeightsError, match="Untick Pretrained Net"):
        build_model(TrainingConfig(pretrained=True))
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_model(TrainingConfig(pretrained=True, pretrained_path=str(tmp_path / "nope.pth")))


def test_weights_load_by_name_from_a_file_with_other_prefixes_and_adapt_the_first_conv(tmp_path):
    torch.manual_seed(1)
    source = build_model(TrainingConfig(color_mode="color")).encoder
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "resnet18-imagenet.pth")
    model = build_model(TrainingConfig(pretrained=True, pretrained_path=str(tmp_path / "resnet18-imagenet.pth")))
    torch.testing.assert_close(model.encoder.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    torch.testing.assert_close(model.encoder.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_weights_load_by_order_when_names_differ_and_from_the_torch_cache(tmp_path, monkeypatch):
    torch.manual_seed(2)
    source = build_model(TrainingConfig()).encoder
    renamed = {f"_block{i}.weight": v for i, v in enumerate(source.state_dict().values())}
    (tmp_path / "checkpoints").mkdir()
    torch.save(renamed, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_model(TrainingConfig(pretrained=True))
    torch.testing.assert_close(model.encoder.layer2[0].bn1.running_var, source.layer2[0].bn1.running_var)
