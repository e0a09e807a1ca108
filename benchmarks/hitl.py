"""A simulated microscopist works through DSB2018 with napari-mia's experiment loop.

Start from one labelled image and train; then, each round, predict the next few images, "correct" them
with their ground truth (counting the objects the user had to fix), accept them and go on training from
the current weights for the same few CPU minutes. After every round: AP@0.5 (mean per image) on a fixed
hold-out. Compared, with the same total training time:

- ``corrections (<policy>)``: the loop, for each retrain policy (learning-rate factor when continuing,
  share of patches for the images new since the last run);
- ``same image only``: continuing for the same minutes without the new images;
- ``from scratch``: one model trained from scratch on the final images with the whole budget.

    python benchmarks/hitl.py [--rounds 4] [--per-round 3] [--round-minutes 1.5] [--hold-out 30]

Prints a table and ``name value target pass|fail`` lines, and writes ``docs/images/hitl.png`` and
``docs/hitl.json``. Needs ``pip install -e ".[benchmarks]"`` for the plot.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from dsb_semantic import DATA, N_VALIDATION

from napari_mia.core import Trainer, TrainingConfig, predict
from napari_mia.core.experiment import Experiment
from napari_mia.core.infer import run
from napari_mia.core.metrics import InstanceScore, instance_iou, match_counts

ROOT = Path(__file__).resolve().parents[1]
# The retrain policies compared: the run that chose the defaults set "full LR, by area" against the
# defaults "lower LR + new share" (docs/results.md).
POLICIES = {"full LR, by area": dict(retrain_lr_factor=1.0, new_image_share=0.0),
            "lower LR + new share": dict(retrain_lr_factor=0.3, new_image_share=0.5)}


def split(hold_out: int) -> tuple[list[str], list[str]]:
    """The seeded hold-out of the other DSB benchmarks (its first ``hold_out`` images) and the rest,
    in a seeded order: the images the user works through."""
    ids = sorted(p.stem for p in (DATA / "images").glob("*.png"))
    order = list(np.random.default_rng(2018).permutation(ids))
    held_out, pool = order[:N_VALIDATION], order[N_VALIDATION:]
    return list(np.random.default_rng(7).permutation(pool)), held_out[:hold_out]


def load(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = iio.imread(DATA / "images" / f"{image_id}.png")[..., :3]
    return image, tifffile.imread(DATA / "labels" / f"{image_id}.tif")


def corrections(truth: np.ndarray, prediction: np.ndarray) -> dict[str, int]:
    """Objects the user fixes: missed and false ones (no match at IoU 0.5), of which merged (one
    prediction holds most of two or more true objects) and split (one true object is most of two or
    more predictions)."""
    iou = instance_iou(truth, prediction)
    _, false, missed = match_counts(iou, 0.5)
    truth_ids, predicted_ids = np.unique(truth)[1:], np.unique(prediction)[1:]
    overlap = np.zeros((len(truth_ids), len(predicted_ids)))
    if len(truth_ids) and len(predicted_ids):
        pairs = (truth > 0) & (prediction > 0)
        rows = np.searchsorted(truth_ids, truth[pairs])
        columns = np.searchsorted(predicted_ids, prediction[pairs])
        np.add.at(overlap, (rows, columns), 1)
    true_area = np.array([(truth == i).sum() for i in truth_ids])[:, None] if len(truth_ids) else np.zeros((0, 1))
    predicted_area = np.array([(prediction == i).sum() for i in predicted_ids])[None] if len(predicted_ids) else (
        np.zeros((1, 0)))
    merged = int(((overlap >= 0.5 * true_area).sum(0) >= 2).sum())
    split_objects = int(((overlap >= 0.5 * predicted_area).sum(1) >= 2).sum())
    return {"to fix": missed + false, "missed": missed, "false": false, "merged": merged, "split": split_objects}


def hold_out_ap(model, config, hold_out) -> float:
    score = InstanceScore()
    for image, truth in hold_out:
        score.add(truth, predict(model, image, config, channel_axis=-1))
    return score.metrics()["ap50_per_image"]


def train(experiment: Experiment, config: TrainingConfig, model=None):
    train_samples, _ = experiment.samples(config)
    trainer = Trainer(config, train_samples, model=model)
    run(trainer.run())
    experiment.mark_trained(experiment.last_used)
    return trainer.model


def new_experiment(pool_images, count: int) -> Experiment:
    experiment = Experiment()
    for name, (image, truth) in list(pool_images.items())[:count]:
        experiment.add_array(name, image, -1, truth)
    return experiment


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--round-minutes", type=float, default=1.5)
    parser.add_argument("--hold-out", type=int, default=30)
    args = parser.parse_args()
    pool_ids, hold_out_ids = split(args.hold_out)
    pool = {i: load(i) for i in pool_ids[: 1 + args.rounds * args.per_round]}
    hold_out = [load(i) for i in hold_out_ids]
    base = TrainingConfig(application="instance", classes=["background", "object"], validation_fraction=0.0,
                          max_minutes=args.round_minutes, epochs=10_000, seed=0)
    started = time.perf_counter()
    first = new_experiment(pool, 1)
    first_model = train(first, base)
    start_ap = hold_out_ap(first_model, base, hold_out)
    print(f"round 0: 1 image, {args.round_minutes} min from scratch: AP@0.5 {start_ap:.3f}", flush=True)
    curves = {}
    for policy, settings in POLICIES.items():
        config = base.replace(**settings)
        experiment, model = new_experiment(pool, 1), _copy(first_model)
        experiment.mark_trained(list(experiment))
        rows = [{"round": 0, "images": 1, "ap50": start_ap, "to fix": 0}]
        names = list(pool)
        for round_number in range(1, args.rounds + 1):
            fixes = {"to fix": 0, "missed": 0, "false": 0, "merged": 0, "split": 0}
            for name in names[1 + (round_number - 1) * args.per_round: 1 + round_number * args.per_round]:
                image, truth = pool[name]
                predicted = predict(model, image, config, channel_axis=-1)
                fixes = {k: fixes[k] + v for k, v in corrections(truth, predicted).items()}
                experiment.add_array(name, image, -1)
                experiment.accept(experiment[name], truth)
            model = train(experiment, config, model)
            rows.append({"round": round_number, "images": len(experiment), "ap50": hold_out_ap(model, config, hold_out),
                         **fixes})
            print(f"{policy}, round {round_number}: {rows[-1]}", flush=True)
        curves[f"corrections ({policy})"] = rows
    same = _copy(first_model)
    rows = [{"round": 0, "images": 1, "ap50": start_ap}]
    for round_number in range(1, args.rounds + 1):
        same = train(first, base.replace(**POLICIES["full LR, by area"]), same)
        rows.append({"round": round_number, "images": 1, "ap50": hold_out_ap(same, base, hold_out)})
        print(f"same image only, round {round_number}: {rows[-1]}", flush=True)
    curves["same image only"] = rows
    everything = new_experiment(pool, len(pool))
    scratch = train(everything, base.replace(max_minutes=args.round_minutes * (args.rounds + 1)))
    scratch_ap = hold_out_ap(scratch, base, hold_out)
    curves["from scratch (whole budget, final images)"] = [{"round": args.rounds, "images": len(pool),
                                                            "ap50": scratch_ap}]
    report(curves, args, time.perf_counter() - started)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def report(curves: dict, args, seconds: float) -> None:
    print(f"\n{args.rounds} rounds of {args.per_round} corrected images, {args.round_minutes} CPU-min each; "
          f"hold-out {args.hold_out} images; {seconds / 60:.0f} min in all\n")
    print("| run | " + " | ".join(f"round {r}" for r in range(args.rounds + 1)) + " | objects fixed |")
    print("|---|" + "---|" * (args.rounds + 2))
    for name, rows in curves.items():
        by_round = {row["round"]: row["ap50"] for row in rows}
        cells = [f"{by_round[r]:.3f}" if r in by_round else "" for r in range(args.rounds + 1)]
        fixed = sum(row.get("to fix", 0) for row in rows)
        print(f"| {name} | " + " | ".join(cells) + f" | {fixed or ''} |")
    loop = {name: rows[-1]["ap50"] for name, rows in curves.items() if name.startswith("corrections")}
    best_policy = max(loop, key=loop.get)
    for other in ("same image only", "from scratch (whole budget, final images)"):
        target = curves[other][-1]["ap50"]
        verdict = "pass" if loop[best_policy] > target else "fail"
        name = f"{best_policy}_vs_{other.split(' (')[0]}".replace(" ", "_")
        print(f"{name} {loop[best_policy]:.3f} {target:.3f} {verdict}")
    (ROOT / "docs" / "hitl.json").write_text(json.dumps({"args": vars(args), "curves": curves}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print('no plot: pip install -e ".[benchmarks]"')
        return
    figure, axis = pyplot.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        axis.plot([r["round"] for r in rows], [r["ap50"] for r in rows], marker="o", label=name)
    axis.set_xlabel(f"round ({args.per_round} corrected images, {args.round_minutes} CPU-min each)")
    axis.set_ylabel("AP@0.5 on the hold-out (mean per image)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(ROOT / "docs" / "images" / "hitl.png", dpi=120)


if __name__ == "__main__":
    main()
