"""All napari-mia benchmarks, each measured side by side in one run.

    python benchmarks/run.py            # full run (DSB accuracy: 5 minutes per method)
    python benchmarks/run.py --quick    # under 10 minutes on a 2-core CPU

Ends with one line per figure: ``name value target pass|fail``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from napari_mia.core import Trainer, TrainingConfig, make_samples, predict  # noqa: E402
from napari_mia.core.data import crop_patch  # noqa: E402
from napari_mia.core.events import BatchEnd  # noqa: E402
from napari_mia.core.infer import prediction_options  # noqa: E402
from napari_mia.core.losses import build_loss  # noqa: E402
from napari_mia.core.models import build_model  # noqa: E402

# The settings these figures were measured with (docs/benchmarks.md), fixed rather than the "auto" defaults.
MEASURED_WITH = {"backbone": "resnet18", "pretrained": False, "color_mode": "mono", "downscale": 1.0}

DSB = HERE.parents[1] / "shared" / "data" / "dsb2018_nuclei" / "train"
RESULTS: list[tuple[str, float, str, bool]] = []


def report(name: str, value: float, target: str, passed: bool) -> None:
    RESULTS.append((name, value, target, passed))
    print(f"  {name} = {value:.3f} (target {target})", flush=True)


def training_samples(config, count=40):
    """DSB training images when the shared data is here, synthetic blobs otherwise."""
    if DSB.is_dir():
        import imageio.v3 as iio
        import tifffile

        ids = sorted(p.stem for p in (DSB / "images").glob("*.png"))[:count]
        samples = []
        for image_id in ids:
            image = iio.imread(DSB / "images" / f"{image_id}.png")[..., :3]
            labels = (tifffile.imread(DSB / "labels" / f"{image_id}.tif") > 0).astype(np.uint8)
            samples += make_samples(image, labels, config, channel_axis=-1)
        return samples
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import blobs

    return [s for seed in range(count) for s in make_samples(*blobs((256, 256), 12, seed=seed), config)]


# Timing starts after this many steps: napari-mia's first six try both precisions on CPUs with bf16 units.
WARMUP_STEPS = 8


def mia_images_per_second(config, samples, batches) -> tuple[float, bool]:
    """napari-mia's throughput, and whether its loop chose bf16 (on CPUs with bf16 units)."""
    trainer = Trainer(config, samples)
    seen, start = 0, None
    for event in trainer.run():
        if isinstance(event, BatchEnd):
            if event.step == WARMUP_STEPS:
                start, seen = time.perf_counter(), 0
            elif start is not None:
                seen += config.batch_size
            if event.step >= batches + WARMUP_STEPS:
                trainer.request_stop()
    return seen / (time.perf_counter() - start), trainer.precision.bf16


def plain_images_per_second(config, samples, batches, fast: bool = False, bf16: bool = False):
    """A minimal hand-written PyTorch + smp loop on the same model, loss, batch and patch size; ``fast``
    adds what napari-mia's loop does for speed (channels-last layout, and bf16 autocast if ``bf16``)."""
    torch.manual_seed(config.seed)
    model, loss_function = build_model(config), build_loss(config)
    layout = torch.channels_last if fast else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(0)
    pairs = [crop_patch(samples[rng.integers(len(samples))], rng.integers(0, 256, 2), config.patch_size)
             for _ in range(config.batch_size * 8)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    labels = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    model.train()
    start = None
    for step in range(batches + 3):
        if step == 3:
            start = time.perf_counter()
        index = torch.from_numpy(rng.integers(0, len(images), config.batch_size))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(images[index].contiguous(memory_format=layout))
        loss = loss_function(logits.float(), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    return batches * config.batch_size / (time.perf_counter() - start)


def bench_training(quick: bool) -> float:
    """napari-mia's loop against the same plain loop twice: with napari-mia's layout and precision (its
    overhead: the target) and as usually written, fp32 in the default layout (what those choices gain)."""
    print("training throughput: napari-mia loop vs plain PyTorch + smp loop", flush=True)
    config = TrainingConfig(epochs=1000, validation_fraction=0.0, **MEASURED_WITH)
    samples = training_samples(config)
    batches = 12 if quick else 40
    mia, same, usual = [], [], []
    for _ in range(2):  # interleaved, best of two, so machine noise hits all alike
        images_per_second, bf16 = mia_images_per_second(config, samples, batches)
        mia.append(images_per_second)
        same.append(plain_images_per_second(config, samples, batches, fast=True, bf16=bf16))
        usual.append(plain_images_per_second(config, samples, batches))
    print(f"  napari-mia {max(mia):.2f} img/s ({'bf16' if bf16 else 'fp32'}, channels-last); plain loop "
          f"with the same {max(same):.2f} img/s; plain fp32 loop {max(usual):.2f} img/s", flush=True)
    report("training_ratio", max(mia) / max(same), ">= 0.95", max(mia) / max(same) >= 0.95)
    report("training_speedup_over_plain_fp32", max(mia) / max(usual), "> 1", max(mia) > max(usual))
    return max(mia)


def bench_data_pipeline(consumed_per_second: float) -> None:
    print("data pipeline: patches/s delivered by dataset + augmentations vs consumed by the model", flush=True)
    config = TrainingConfig(epochs=1, validation_fraction=0.0, **MEASURED_WITH)
    trainer = Trainer(config, training_samples(config))
    loader = trainer._loader()
    start, delivered = time.perf_counter(), 0
    for images, _ in loader:
        delivered += len(images)
        if delivered >= 160:
            break
    supplied = delivered / (time.perf_counter() - start)
    print(f"  {supplied:.0f} patches/s supplied, {consumed_per_second:.1f} consumed", flush=True)
    report("data_supply_ratio", supplied / consumed_per_second, ">= 1", supplied >= consumed_per_second)


def bench_prediction(quick: bool) -> None:
    size = 2048 if quick else 4096
    print(f"tiled prediction vs one whole-image forward, {size}x{size}", flush=True)
    torch.manual_seed(0)
    config = TrainingConfig(**MEASURED_WITH)
    model = build_model(config).eval()
    image = np.random.default_rng(0).integers(0, 4096, (size, size), dtype=np.uint16)
    predict(model, image[:512, :512], config)  # warm-up
    start = time.perf_counter()
    predict(model, image, config)
    tiled = size * size / (time.perf_counter() - start) / 1e6
    prepared = torch.from_numpy(image[None].astype(np.float32) / 4096)[None]
    bf16 = prediction_options(config, "cpu")["bf16"]  # the whole forward runs as the tiles do
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start = time.perf_counter()
        model(prepared.contiguous(memory_format=torch.channels_last)).float().softmax(1).argmax(1)
        whole = size * size / (time.perf_counter() - start) / 1e6
    print(f"  tiled {tiled:.2f} MP/s, whole-image forward {whole:.2f} MP/s", flush=True)
    report("tiled_prediction_ratio", tiled / whole, ">= 0.9", tiled / whole >= 0.9)


_MEMORY_SCRIPT = """
import json, os, sys, threading, time, numpy as np, torch
from napari_mia.core import TrainingConfig, predict
from napari_mia.core.models import build_model


def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

size, config = int(sys.argv[1]), TrainingConfig(backbone="resnet18", pretrained=False, color_mode="mono",
                                                downscale=1.0)
model = build_model(config).eval()
image = np.ones((size, size), np.uint16); out = np.ones((size, size), np.uint16)  # touched: resident
predict(model, np.ones((64, 64), np.uint16), config)
before, peak, done = resident_mb(), [0.0], threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], resident_mb())
        time.sleep(0.005)

sampler = threading.Thread(target=sample)
sampler.start()
predict(model, image, config, out=out)
done.set(); sampler.join()
print(json.dumps({"extra_mb": peak[0] - before}))
"""


def bench_memory(quick: bool) -> None:
    sizes = (1536, 4096, 6144) if quick else (1536, 4096, 16384)  # 1536: one whole default tile
    print(f"prediction memory beyond image and output, sizes {sizes}", flush=True)
    extra = {}
    for size in sizes:
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(size)], capture_output=True, text=True,
                             check=True)
        extra[size] = json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]
        print(f"  {size}x{size}: {extra[size]:.0f} MB", flush=True)
    growth = max(extra.values()) / max(extra[sizes[0]], 1.0)
    report("prediction_memory_vs_one_tile", growth, "<= 1.5 (flat beyond the tile)", growth <= 1.5)


def _widget_run(batches: int, hidden: bool) -> dict | None:
    command = [sys.executable, str(HERE / "widget_bench.py"), "--batches", str(batches)]
    command += ["--hidden"] if hidden else []
    if not os.environ.get("DISPLAY"):
        command = ["xvfb-run", "-a", *command]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        print(out.stderr[-2000:])
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_widget(quick: bool) -> None:
    print("widget: event-loop stalls and training throughput in the worker vs headless", flush=True)
    batches = 12 if quick else 30
    shown, hidden = _widget_run(batches, hidden=False), _widget_run(batches, hidden=True)
    if shown is None or hidden is None:
        report("widget_benchmark_ran", 0.0, "= 1", False)
        return
    for label, result in (("", shown), ("_hidden_window", hidden)):
        stall_training, stall_predicting = result["stall_training_ms"], result["stall_predicting_ms"]
        report(f"worst_stall_training{label}_ms", stall_training, "< 50", stall_training < 50)
        report(f"worst_stall_predicting{label}_ms", stall_predicting, "< 50", stall_predicting < 50)
        ratio = result["widget_over_headless"]
        report(f"widget_training_ratio{label}", ratio, ">= 0.9", ratio >= 0.9)
    print(f"  (shown window: the worst training stall came {shown['worst_training_stall_at_s']:.2f} s after Train, "
          f"the next worst was {shown['second_worst_training_stall_ms']:.0f} ms)")
    print(f"  (not stalls of a running job: starting a run {shown['start_training_ms']:.0f} ms, the repaints "
          f"after the click before the worker starts {shown['click_repaint_training_ms']:.0f} ms (training) and "
          f"{shown['click_repaint_predicting_ms']:.0f} ms (predicting), writing a 2048x2048 prediction layer "
          f"{shown['write_prediction_ms']:.0f} ms)")
    print(f"  (widget/headless per block: {', '.join(f'{r:.2f}' for r in shown['widget_over_headless_blocks'])})")


def bench_accuracy(quick: bool) -> None:
    if not DSB.is_dir():
        print("accuracy per minute: skipped (no DSB2018 data)", flush=True)
        return
    from accuracy import compare

    minutes = 1.0 if quick else 5.0
    print(f"accuracy per minute on DSB2018 hold-out: napari-mia vs random forest, {minutes} min each", flush=True)
    (mia_pooled, mia), (forest_pooled, forest) = compare(minutes, n_validation=30 if quick else 100)
    print(f"  foreground IoU mean per image (pooled): napari-mia {mia:.3f} ({mia_pooled:.3f}), random forest "
          f"{forest:.3f} ({forest_pooled:.3f})", flush=True)
    report("dsb_iou_vs_random_forest", mia - forest, "> 0 (napari-mia better)", mia > forest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="training prediction memory widget accuracy")
    args = parser.parse_args()
    wanted = set(args.only or ["training", "prediction", "memory", "widget", "accuracy"])
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}", flush=True)
    if "training" in wanted:
        bench_data_pipeline(bench_training(args.quick))
    if "prediction" in wanted:
        bench_prediction(args.quick)
    if "memory" in wanted:
        bench_memory(args.quick)
    if "widget" in wanted:
        bench_widget(args.quick)
    if "accuracy" in wanted:
        bench_accuracy(args.quick)
    print()
    for name, value, target, passed in RESULTS:
        print(f"{name} {value:.3f} {target.replace(' ', '')} {'pass' if passed else 'fail'}")


if __name__ == "__main__":
    main()
