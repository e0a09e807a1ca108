"""Model factory (segmentation-models-pytorch) and offline ImageNet weights.

Nothing is downloaded: with "Pretrained Net" on, encoder weights come from a local file
(``config.pretrained_path``) or from the torch hub cache; a missing file is a clear error.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import segmentation_models_pytorch as smp
import torch

from .config import TrainingConfig
from .weights import cache_folder, find_weights

_PREFIXES = ("module.", "model.", "encoder.", "backbone.")


class PretrainedWeightsError(FileNotFoundError):
    """ImageNet weights for the chosen backbone cannot be found or do not fit."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def uses_bf16(device: torch.device | str, mixed_precision: bool) -> bool:
    """Whether to run the network under bf16 autocast: on CUDA, and on CPUs with bf16 matrix units
    (Intel AMX), where convolutions run 2-3x faster than in fp32. Weights and losses stay fp32."""
    device_type = torch.device(device).type
    if not mixed_precision or device_type not in ("cuda", "cpu"):
        return False
    return device_type == "cuda" or cpu_has_bf16_units()


def bf16_autocast(device_type: str, enabled: bool):
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def cpu_has_bf16_units() -> bool:
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(has_amx and has_amx())


def channels_last(module_or_tensor, device: torch.device | str):
    """Channels-last memory layout, which oneDNN (CPU) and cuDNN run faster (on this 2-core CPU: 1.4x for
    efficientnet-lite0 training, more under bf16); MPS keeps the default layout."""
    if torch.device(device).type == "mps":
        return module_or_tensor
    return module_or_tensor.to(memory_format=torch.channels_last)


def available_devices() -> list[tuple[str, str]]:
    """(label, device) pairs for a device picker; labels show each GPU's memory."""
    devices = [("auto (fastest available)", "auto")]
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        devices.append((f"cuda:{index} {properties.name} ({properties.total_memory / 2**30:.0f} GiB)",
                        f"cuda:{index}"))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        devices.append(("mps (Apple GPU)", "mps"))
    devices.append(("cpu", "cpu"))
    return devices


class Classifier(torch.nn.Module):
    """MIA's "Standard" classifier: an smp encoder, global average pooling and one linear layer."""

    def __init__(self, backbone: str, in_channels: int, classes: int):
        super().__init__()
        self.encoder = smp.encoders.get_encoder(backbone, in_channels=in_channels, depth=5, weights=None)
        self.head = torch.nn.Linear(self.encoder.out_channels[-1], classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)[-1]
        return self.head(features.mean(dim=(2, 3)))


def _takes_decoder_channel_list(architecture: str) -> bool:
    """Whether smp's ``architecture`` takes one decoder width per stage (Unet, Unet++, MAnet; DeepLabV3+
    takes one width): asked of smp, not copied from its docs."""
    parameter = inspect.signature(getattr(smp, architecture)).parameters.get("decoder_channels")
    return parameter is not None and isinstance(parameter.default, (tuple, list))


def build_model(config: TrainingConfig) -> torch.nn.Module:
    """The network for ``config``; ImageNet encoder weights are loaded from disk when asked for."""
    if config.kind.image_classes:
        model = Classifier(config.backbone, config.input_channels, config.n_outputs)
        if config.pretrained:
            load_encoder_weights(model.encoder, find_pretrained_file(config))
        return model
    options = {}
    if config.decoder_channels and _takes_decoder_channel_list(config.architecture):
        options["decoder_channels"] = config.decoder_channels
    model = smp.create_model(
        config.architecture,
        encoder_name=config.backbone,
        encoder_weights=None,
        in_channels=config.input_channels,
        classes=config.n_outputs,
        **options,
    )
    if config.kind.points:
        _start_heatmaps_low(model.segmentation_head)
    if config.pretrained:
        path = find_pretrained_file(config)
        load_encoder_weights(model.encoder, path)
    return model


def _start_heatmaps_low(head: torch.nn.Module, prior: float = 0.01) -> None:
    """Heatmaps start near ``prior`` everywhere (CenterNet's bias), not 0.5: almost every pixel is
    background, and a start at 0.5 makes the first hundreds of batches unlearn it."""
    last = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.constant_(last.bias, -float(torch.log(torch.tensor((1 - prior) / prior))))


def find_pretrained_file(config: TrainingConfig) -> Path:
    if config.pretrained_path:
        path = Path(config.pretrained_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"Pretrained Net: weights file {path} does not exist")
        return path
    path = find_weights(config.backbone)
    if path is None:
        raise PretrainedWeightsError(
            f"Pretrained Net: no ImageNet weights for {config.backbone} in {cache_folder()} and nothing is "
            "downloaded here. Untick Pretrained Net to train from scratch, or point at a weights file "
            "(--pretrained PATH / pretrained_path)."
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or a torch file, never executing code from it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
        raise PretrainedWeightsError(f"Pretrained Net: cannot read {path}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_encoder_weights(encoder: torch.nn.Module, path: Path, min_fraction: float = 0.9) -> int:
    """Copy ImageNet weights into ``encoder``; returns the number of tensors loaded.

    Tensors are matched by name (ignoring wrapper prefixes) or, when a file uses other names for the
    same network (e.g. efficientnet-lite0's ``_conv_stem`` vs timm's ``conv_stem``), by order and
    shape. The first convolution is adapted to the model's input channels.
    """
    source = read_state_dict(path)
    target = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    mapped = _match_by_name(source, target)
    if len(mapped) < min_fraction * len(target):
        mapped = _match_by_order(source, target)
    if len(mapped) < min_fraction * len(target):
        raise PretrainedWeightsError(
            f"Pretrained Net: {path} fits only {len(mapped)} of {len(target)} encoder tensors; "
            "is it the right backbone?"
        )
    encoder.load_state_dict(mapped, strict=False)
    return len(mapped)


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _fit(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    if source.shape == target.shape:
        return source
    if source.ndim == 4 and source.shape[0] == target.shape[0] and source.shape[2:] == target.shape[2:]:
        # First convolution with another channel count: fold or cycle the RGB filters.
        if target.shape[1] == 1:
            return source.sum(dim=1, keepdim=True)
        repeats = -(-target.shape[1] // source.shape[1])
        return source.repeat(1, repeats, 1, 1)[:, : target.shape[1]] * (source.shape[1] / target.shape[1])
    return None


def _match_by_name(source, target):
    by_name = {_strip(k): v for k, v in source.items()}
    mapped = {}
    for key, tensor in target.items():
        found = by_name.get(_strip(key))
        fitted = None if found is None else _fit(found, tensor)
        if fitted is not None:
            mapped[key] = fitted
    return mapped


def _match_by_order(source, target):
    source_tensors = [v for v in source.values() if v.ndim > 0]  # skips BatchNorm step counters
    mapped = {}
    for (key, tensor), found in zip(target.items(), source_tensors):
        fitted = _fit(found, tensor)
        if fitted is None:
            break
        mapped[key] = fitted
    return mapped
