"""Training and prediction speed of one U-Net in fp32 and bf16 autocast, default and channels-last
layout, measured side by side (rounds interleaved, medians), so the choices of ``core.models`` can be
checked on any machine.

    python benchmarks/precision.py [--backbones resnet18 tu-efficientnet_lite0] [--rounds 6]

Training: forward, backward and an Adam step on batches of 16 patches of 128² (the default), images/s.
Prediction: batches of four 512² tiles under ``torch.inference_mode``, megapixels/s.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from napari_mia.core import TrainingConfig
from napari_mia.core.models import build_model, cpu_has_bf16_units

VARIANTS = list(itertools.product((False, True), (False, True)))  # (bf16, channels-last)


def timed_train_step(model, optimizer, images, labels, bf16: bool, layout) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model.to(memory_format=layout)(images.contiguous(memory_format=layout))
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def timed_prediction(model, tiles, bf16: bool, layout) -> float:
    model.eval().to(memory_format=layout)
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(tiles.contiguous(memory_format=layout))
    model.train()
    return time.perf_counter() - start


def measure(backbone: str, rounds: int) -> None:
    torch.manual_seed(0)
    config = TrainingConfig(backbone=backbone, color_mode="color", pretrained=False, downscale=1.0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = torch.randn(config.batch_size, 3, config.patch_size, config.patch_size)
    labels = torch.randint(0, config.n_outputs, (config.batch_size, config.patch_size, config.patch_size))
    tiles = torch.randn(4, 3, 512, 512)
    layouts = {False: torch.contiguous_format, True: torch.channels_last}
    train_seconds = {variant: [] for variant in VARIANTS}
    predict_seconds = {variant: [] for variant in VARIANTS}
    for bf16, last in VARIANTS:  # warm-up: each variant builds its kernels
        timed_train_step(model, optimizer, images, labels, bf16, layouts[last])
        timed_prediction(model, tiles, bf16, layouts[last])
    for _ in range(rounds):
        for bf16, last in VARIANTS:
            train_seconds[(bf16, last)] += [timed_train_step(model, optimizer, images, labels, bf16, layouts[last])
                                            for _ in range(3)]
            predict_seconds[(bf16, last)].append(timed_prediction(model, tiles, bf16, layouts[last]))
    baseline = VARIANTS[0]
    for variant in VARIANTS:
        train = config.batch_size / statistics.median(train_seconds[variant])
        predict = tiles[:, 0].numel() / 1e6 / statistics.median(predict_seconds[variant])
        train_ratio = statistics.median(train_seconds[baseline]) / statistics.median(train_seconds[variant])
        predict_ratio = statistics.median(predict_seconds[baseline]) / statistics.median(predict_seconds[variant])
        print(f"{backbone:24s} {'bf16' if variant[0] else 'fp32'} {'channels-last' if variant[1] else 'default      '}"
              f"  train {train:5.1f} img/s ({train_ratio:.2f}x)  predict {predict:5.2f} MP/s ({predict_ratio:.2f}x)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "tu-efficientnet_lite0"])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}, bf16 matrix units (AMX): {cpu_has_bf16_units()}")
    for backbone in args.backbones:
        measure(backbone, args.rounds)


if __name__ == "__main__":
    main()
