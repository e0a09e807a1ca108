"""A user's new image type from k labelled images: colour (H&E-like) DSB2018 nuclei, a type held out of
everything else, learnt from k = 1, 3, 5 of its images, with and without a model of the other type.

The DSB2018 training images split by type: the grey (fluorescence) images train the model a user would
already have (``--base-minutes``; or ``--base-model``); the colour images never reach it. Of the colour
images, ``--test`` (seeded) are the test set and the first k of the others (nested: the 1 is in the 3) are
what the user labels. Every path below trains ``--minutes`` on the k images through the plain command
(``napari-mia train --application instance``), then ``napari-mia predict``s the test images:

- ``from model``: ``--from-model`` the grey model, as a user goes on from the folder's model;
- ``ImageNet``: the plain command from ImageNet weights alone;
- ``random forest``: a pixel forest on the same k images (scikit-image features, the ilastik / convpaint
  way), its foreground split into connected objects (``accuracy.py``'s forest, up to ``--minutes``);
- ``StarDist``: with ``--peer-python`` (a Python with the ``peers`` extra), StarDist 2D from scratch on the
  same k images for the same minutes (``peer_instances.py``: its example configuration on the grey mean
  of the colour image; no pretrained StarDist model, since nothing downloads here);
- ``self-training`` (with ``--self-training SHARE ...``): the unlabelled colour images of the pool predicted by
  the k-image model from the grey one, the ``SHARE`` of them it is surest of (uncertainty.csv) taken as labels
  beside the k labelled ones, and the k-image model trained on them for ``--minutes`` as the loop retrains
  (``--from-model``): pseudo-labels, or a user who accepts every prediction without correcting it;
- further variants by ``--variant NAME=OPTIONS`` (train options, e.g. ``lr1="--config lr1.json"``), at the
  largest k.

AP@0.5 mean per image (objects matched one to one by IoU > 0.5). Prints ``name value target pass|fail``
lines (the default path at the largest k against 0.75 and against the forest + 0.10: issue #28), a table,
and with ``--plot`` AP against k.

``--points``: the same new type counted instead, as a user who clicks each nucleus: the centroids of the k
images' nuclei through the plain detection command (``napari-mia train --application detection --points``),
from ImageNet weights and going on (``--from-model``) from the same command's model of the grey images'
centroids (``--base-minutes``), its points on the test images matched to the true centroids within half of each
image's median nucleus diameter. Prints F1 (target 0.90) and the count ratio, predicted / true points over
the test images (target 0.95-1.05), per k, and beside each model the same model's points chosen by its peak
thresholds instead of its heatmap mass (the rule before 2026-12-05); ``--variant`` adds rows at the largest k.

``--em``: ISBI 2012's EM membranes instead, a type (and a microscope) the project has no model of: the first
k of a seeded order of slices 0-23 through the plain semantic command (``--application semantic``, membranes
as class 1) from ImageNet weights, and the pixel forest on the same slices; membrane IoU, mean over the test
slices 24-29 (the stack's last, one block, since neighbouring slices look alike). Prints
``iou_membranes_k<K>_imagenet_minus_forest`` (target > 0) and a table; ``--variant`` adds rows at the largest k.

    python benchmarks/new_types.py [--ks 1 3 5] [--minutes 10] [--base-minutes 10] [--workdir W] [--plot P]
        [--peer-python PEERS_VENV/bin/python] [--points | --em] [--self-training 0.5 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from dsb_instance import score
from dsb_semantic import DATA

from napari_mia.core.auto import is_colour
from napari_mia.core.files import read_image

CLI = [sys.executable, "-m", "napari_mia"]
AP_TARGET, ABOVE_FOREST = 0.75, 0.10
F1_TARGET, COUNT_TARGET = 0.90, (0.95, 1.05)
EM = DATA.parents[1] / "isbi2012_em_membranes"
EM_TEST = slice(24, 30)  # the stack's last six slices, one block: neighbouring slices look alike


def split_by_type(work: Path) -> dict[str, list[str]]:
    """The stems of DSB2018's grey and colour images (read once, kept in ``work``)."""
    kept = work / "types.json"
    if not kept.exists():
        types = {"grey": [], "colour": []}
        for path in sorted((DATA / "images").glob("*.png")):
            types["colour" if is_colour(*read_image(path)) else "grey"].append(path.stem)
        kept.write_text(json.dumps(types))
    return json.loads(kept.read_text())


def link_folder(stems: list[str], folder: Path, labels: Path | None = DATA / "labels",
                images: Path = DATA / "images") -> Path:
    """``folder/images`` and ``folder/labels`` holding links to the PNG images of ``stems`` (DSB2018's unless
    given) and their TIFF label images in ``labels`` (DSB2018's true ones unless given; None: images only)."""
    sources = {"images": (images, ".png"), "labels": (labels, ".tif")}
    for kind, (source, suffix) in sources.items():
        if source is None:
            continue
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            link = folder / kind / f"{stem}{suffix}"
            if not link.exists():
                link.symlink_to(source / f"{stem}{suffix}")
    return folder


def train(folder: Path, model: Path, minutes: float, options: list[str]) -> float:
    """Train through the plain command (once: a model already there is kept); the minutes it took."""
    return trained_once(model, ["--application", "instance", "--images", str(folder / "images"), "--labels",
                                str(folder / "labels"), "--max-minutes", str(minutes), *options])


def trained_once(model: Path, options: list[str]) -> float:
    """``napari-mia train OPTIONS --out model`` unless the model is there; the minutes it took (kept beside)."""
    minutes = model.parent / f"{model.stem}.minutes"
    if not model.exists():
        command = [*CLI, "train", *options, "--out", str(model)]
        print("  " + shlex.join(command[2:]), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        minutes.write_text(f"{(time.perf_counter() - start) / 60:.2f}")
    return float(minutes.read_text())


def predicted_once(model: Path, images: Path, out: Path, *options: str, written: str = "") -> Path:
    """``out``, where ``napari-mia predict`` wrote the model's predictions of ``images`` (once: a folder already
    there, or holding the file ``written``, is kept)."""
    if not (out / written).exists():
        subprocess.run([*CLI, "predict", "--model", str(model), "--images", str(images), "--out", str(out), *options],
                       check=True, capture_output=True)
    return out


def predicted_ap(model: Path, test: Path, out: Path) -> float:
    return score(predicted_once(model, test / "images", out), test / "labels")["ap50_per_image"]


def forest_ap(train_stems: list[str], test: Path, out: Path, minutes: float) -> float:
    """The pixel forest of ``accuracy.py`` on the k images, its foreground's connected regions as objects."""
    from accuracy import load
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    if not out.is_dir():
        classify = pixel_forest([load(stem) for stem in train_stems], minutes)
        out.mkdir(parents=True)
        for path in sorted((test / "images").iterdir()):
            objects = label(remove_small_objects(classify(load(path.stem)[0]).astype(bool), max_size=15))
            tifffile.imwrite(out / f"{path.stem}.tif", objects.astype(np.uint16))
    return score(out, test / "labels")["ap50_per_image"]


def pixel_forest(labelled: list[tuple[np.ndarray, np.ndarray]], minutes: float):
    """A random forest on ``accuracy.py``'s pixel features of the (image (H, W, C), truth (H, W)) pairs, up to
    100 trees or ``minutes``; a function from an image to its predicted class per pixel."""
    from accuracy import _features
    from sklearn.ensemble import RandomForestClassifier

    start, rng = time.perf_counter(), np.random.default_rng(0)
    features, targets = [], []
    for image, truth in labelled:  # every labelled pixel is cheap to have with k images: up to 20,000 each
        pixels = rng.choice(truth.size, min(20_000, truth.size), replace=False)
        features.append(_features(image).reshape(truth.size, -1)[pixels])
        targets.append(truth.reshape(-1)[pixels])
    forest = RandomForestClassifier(n_estimators=0, max_depth=16, n_jobs=2, random_state=0, warm_start=True)
    while forest.n_estimators < 100 and (time.perf_counter() - start < 60 * minutes or not forest.n_estimators):
        forest.n_estimators += 10
        forest.fit(np.concatenate(features), np.concatenate(targets))

    def classify(image: np.ndarray) -> np.ndarray:
        features = _features(image)
        return forest.predict(features.reshape(-1, features.shape[-1])).reshape(features.shape[:2])

    return classify


def stardist_ap(peer_python: str, folder: Path, test: Path, out: Path, minutes: float) -> float:
    """StarDist trained on ``folder`` by ``peer_instances.py`` in the peers' Python (once), on the test images."""
    if not any(out.glob("*.tif")):  # peer_instances makes the folder first: a run that failed left it empty
        command = [peer_python, str(Path(__file__).with_name("peer_instances.py")), "stardist", "--train",
                   str(folder), "--val", str(test), "--out", str(out), "--minutes", str(minutes)]
        print("  " + subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip(), flush=True)
    return score(out, test / "labels")["ap50_per_image"]


def centroids(stem: str) -> np.ndarray:
    """(N, 2) y, x of the nuclei of one DSB2018 image."""
    from skimage.measure import regionprops

    return np.array([region.centroid for region in regionprops(tifffile.imread(DATA / "labels" / f"{stem}.tif"))],
                    np.float64).reshape(-1, 2)


def matching_radius(stem: str) -> float:
    """Half the median equivalent diameter of the image's nuclei."""
    from skimage.measure import regionprops

    regions = regionprops(tifffile.imread(DATA / "labels" / f"{stem}.tif"))
    return float(np.median([region.equivalent_diameter_area for region in regions])) / 2


def train_points(stems: list[str], folder: Path, model: Path, minutes: float, options: list[str]) -> float:
    """The plain detection command (and ``options``) on the nuclei centroids of ``stems`` (once); the
    minutes it took."""
    if not model.exists():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "points.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("image", "y", "x"))
            writer.writerows((stem, f"{y:.1f}", f"{x:.1f}") for stem in stems for y, x in centroids(stem))
    return trained_once(model, ["--application", "detection", "--images", str(folder / "images"), "--points",
                                str(folder / "points.csv"), "--max-minutes", str(minutes), *options])


def counted(model: Path, test: Path, out: Path) -> tuple[float, float]:
    """(F1, count ratio predicted / true) of the model's points on the test images."""
    with open(predicted_once(model, test / "images", out, written="points.csv") / "points.csv") as handle:
        rows = list(csv.DictReader(handle))
    return point_scores({path.stem: np.array([(float(r["y"]), float(r["x"])) for r in rows if r["image"] == path.stem])
                         for path in sorted((test / "images").iterdir())})


def counted_by_thresholds(model: Path, test: Path) -> tuple[float, float]:
    """``counted`` with the same model's points chosen by its peak thresholds instead of its heatmap mass
    (the rule before 2026-12-05), through the Python API."""
    from napari_mia.core.infer import iter_predict_points, run
    from napari_mia.core.io import load_model

    network, config, _ = load_model(model)
    config = config.replace(mass_below_frames=0)
    found = {}
    for path in sorted((test / "images").iterdir()):
        image, channel_axis = read_image(path)
        found[path.stem] = run(iter_predict_points(network, image, config, channel_axis))[0]
    return point_scores(found)


def point_scores(found: dict[str, np.ndarray]) -> tuple[float, float]:
    """(F1, count ratio predicted / true) of the (N, 2) points ``found`` in each test image (by stem)."""
    from napari_mia.core.metrics import detection_scores, match_points

    counts = np.zeros(3, np.int64)
    for stem, points in found.items():
        counts += match_points(centroids(stem), points.reshape(-1, 2), matching_radius(stem))
    true_positive, false_positive, false_negative = (int(c) for c in counts)
    return (detection_scores(true_positive, false_positive, false_negative)["f1"],
            (true_positive + false_positive) / max(true_positive + false_negative, 1))


def count_new_type(pool: list[str], grey: list[str], test: Path, work: Path, args) -> None:
    """``--points``: the new type learnt from the k images' centroids, from ImageNet weights and going on from a
    points model of the grey images; F1 and count ratio per k."""
    base = work / "points-grey.safetensors"
    minutes = train_points(grey, link_folder(grey, work / "points-grey"), base, args.base_minutes, [])
    print(f"  grey points model: {minutes:.1f} min", flush=True)
    print("\n| k | F1 | count ratio | minutes |\n|---|---|---|---|")
    paths = [("", []), ("from model", ["--from-model", str(base)])]
    runs = [(k, *path) for k in args.ks for path in paths] + [(max(args.ks), *variant) for variant in variants(args)]
    lines = []
    for k, name, options in runs:
        folder = link_folder(pool[:k], work / f"points-k{k}")
        slug = f"k{k}" + (f"-{name.replace(' ', '-')}" if name else "")
        minutes = train_points(pool[:k], folder, work / f"points-{slug}.safetensors", args.minutes, options)
        f1, ratio = counted(work / f"points-{slug}.safetensors", test, work / f"predicted-points-{slug}")
        print(f"| {k} {name} | {f1:.3f} | {ratio:.3f} | {minutes:.1f} |", flush=True)
        f1_thresholds, ratio_thresholds = counted_by_thresholds(work / f"points-{slug}.safetensors", test)
        print(f"| {k} {name}, peak thresholds (same model) | {f1_thresholds:.3f} | {ratio_thresholds:.3f} | |",
              flush=True)
        if (name, options) in paths:
            lines.append((f"k{k}" + (f"_{name.replace(' ', '_')}" if name else ""), f1, ratio))
    for slug, f1, ratio in lines:
        report(f"f1_colour_points_{slug}", f1, f">={F1_TARGET}", f1 >= F1_TARGET)
        report(f"count_ratio_colour_points_{slug}", ratio, f"{COUNT_TARGET[0]}-{COUNT_TARGET[1]}",
               COUNT_TARGET[0] <= ratio <= COUNT_TARGET[1])


def self_trained_ap(labelled: list[str], unlabelled: list[str], share: float, test: Path, work: Path,
                    minutes: float) -> float:
    """The k-image model (from the grey one) retrained on its k ``labelled`` images and its own predictions of
    the ``share`` of ``unlabelled`` it is surest of."""
    k = len(labelled)
    k_model, predicted = work / f"k{k}-from-model.safetensors", work / f"pseudo-k{k}"
    images = link_folder(unlabelled, work / "unlabelled", labels=None) / "images"
    predicted_once(k_model, images, predicted, "--uncertainty")
    with open(predicted / "uncertainty.csv") as handle:
        surest_first = [row["image"] for row in csv.DictReader(handle)][::-1]
    taken = surest_first[: round(share * len(surest_first))]
    folder = link_folder(taken, link_folder(labelled, work / f"self-k{k}-{share:g}"), labels=predicted)
    model = work / f"self-k{k}-{share:g}.safetensors"
    took = train(folder, model, minutes, ["--from-model", str(k_model)])
    ap = predicted_ap(model, test, work / f"predicted-self-k{k}-{share:g}")
    print(f"  k={k} self-training on {len(taken)} predicted images: AP@0.5 {ap:.4f} ({took:.1f} min)", flush=True)
    return ap


def em_folder(stems: list[str], folder: Path) -> Path:
    """``folder/images`` linking the ISBI 2012 slices of ``stems``, ``folder/labels`` their membranes as class 1."""
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    link_folder(stems, folder, labels=None, images=EM / "images")
    for stem in stems:
        if not (folder / "labels" / f"{stem}.tif").exists():
            tifffile.imwrite(folder / "labels" / f"{stem}.tif", em_slice(stem)[1].astype(np.uint8))
    return folder


def em_slice(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """An ISBI 2012 slice as (H, W, 1) and its membranes (H, W) bool (the data's 0 is membrane, 255 cell)."""
    return (iio.imread(EM / "images" / f"{stem}.png")[..., None],
            iio.imread(EM / "labels" / f"{stem}.png") == 0)


def membranes_new_type(work: Path, args) -> None:
    """``--em``: ISBI 2012's EM membranes, a type nothing here has seen, from k slices through the plain
    semantic command (ImageNet weights: no model of another EM type exists to go on from) and by a pixel
    forest on the same slices; membrane IoU, mean per test slice."""
    from accuracy import ious

    slices = sorted(path.stem for path in (EM / "images").glob("*.png"))
    tests, pool = slices[EM_TEST], list(np.random.default_rng(28).permutation(slices[: EM_TEST.start]))
    test = em_folder(tests, work / "em-test")
    test_slices = [em_slice(stem) for stem in tests]
    truths = [truth for _, truth in test_slices]
    print(f"new type: ISBI 2012 EM membranes, {len(slices)} slices ({len(tests)} to test on, the stack's last)",
          flush=True)
    results: dict[str, dict[int, float]] = {}
    for k in args.ks:
        folder = em_folder(pool[:k], work / f"em-k{k}")
        for name, options in [("ImageNet", [])] + (variants(args) if k == max(args.ks) else []):
            slug = f"em-k{k}-{name.replace(' ', '-')}"
            minutes = trained_once(work / f"{slug}.safetensors", [
                "--application", "semantic", "--images", str(folder / "images"), "--labels", str(folder / "labels"),
                "--max-minutes", str(args.minutes), *options])
            out = predicted_once(work / f"{slug}.safetensors", test / "images", work / f"predicted-{slug}")
            iou = ious([tifffile.imread(out / f"{stem}.tif") == 1 for stem in tests], truths)[1]
            results.setdefault(name, {})[k] = iou
            print(f"  k={k} {name}: membrane IoU {iou:.4f} ({minutes:.1f} min with loading)", flush=True)
        classify = pixel_forest([em_slice(stem) for stem in pool[:k]], args.minutes)
        iou = ious([classify(image).astype(bool) for image, _ in test_slices], truths)[1]
        results.setdefault("random forest", {})[k] = iou
        print(f"  k={k} random forest: membrane IoU {iou:.4f}", flush=True)
    k = max(args.ks)
    margin = results["ImageNet"][k] - results["random forest"][k]
    report(f"iou_membranes_k{k}_imagenet_minus_forest", margin, ">0", margin > 0)
    print_table(results, args.ks)
    if args.plot:
        plot(results, args, "labelled EM slices (k)", "membrane IoU, mean per slice")


def variants(args) -> list[tuple[str, list[str]]]:
    """``--variant NAME=OPTIONS`` as (name, train options)."""
    return [(name, shlex.split(options)) for name, options in (v.split("=", 1) for v in args.variant)]


def report(name: str, value: float, target: str, passed: bool) -> None:
    print(f"{name} {value:.4f} {target} {'pass' if passed else 'fail'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5], help="labelled images of the new type")
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes of every k-image run")
    parser.add_argument("--base-minutes", type=float, default=10.0, help="training minutes of the grey model")
    parser.add_argument("--base-model", help="a model of the grey images to start from (instead of training one)")
    parser.add_argument("--test", type=int, default=30, help="colour images to test on")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="another path at the largest k: train options given to the plain command")
    parser.add_argument("--peer-python", help="a Python with the peers extra: adds StarDist on the same k images")
    parser.add_argument("--workdir")
    parser.add_argument("--plot", help="write AP against k to this PNG")
    parser.add_argument("--points", action="store_true", help="count the new type with points instead")
    parser.add_argument("--em", action="store_true", help="ISBI 2012 EM membranes from k slices instead")
    parser.add_argument("--self-training", type=float, nargs="*", default=[], metavar="SHARE",
                        help="at the largest k, retrain from model on its surest predictions of this share of "
                             "the unlabelled colour images")
    args = parser.parse_args()
    data = EM if args.em else DATA
    if not data.is_dir():
        sys.exit(f"no data at {data}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="new-types-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.em:
        membranes_new_type(work, args)
        return
    types = split_by_type(work)
    colour = list(np.random.default_rng(28).permutation(types["colour"]))
    test, pool = link_folder(colour[: args.test], work / "test"), colour[args.test:]
    print(f"new type: colour DSB2018, {len(types['colour'])} images ({args.test} to test on); the model before: "
          f"{len(types['grey'])} grey images", flush=True)
    if args.points:
        count_new_type(pool, types["grey"], test, work, args)
        return
    base = Path(args.base_model) if args.base_model else work / "grey.safetensors"
    if not args.base_model:
        minutes = train(link_folder(types["grey"], work / "grey"), base, args.base_minutes, [])
        print(f"  grey model: {minutes:.1f} min", flush=True)
    print(f"  grey model on the colour test images, no colour label: AP@0.5 "
          f"{predicted_ap(base, test, work / 'predicted-grey'):.4f}", flush=True)
    paths = {"from model": ["--from-model", str(base)], "ImageNet": []}
    paths.update(variants(args))
    results: dict[str, dict[int, float]] = {}
    for k in args.ks:
        folder = link_folder(pool[:k], work / f"k{k}")
        for name, options in paths.items():
            if name in ("from model", "ImageNet") or k == max(args.ks):
                slug = name.replace(" ", "-")
                minutes = train(folder, work / f"k{k}-{slug}.safetensors", args.minutes, options)
                ap = predicted_ap(work / f"k{k}-{slug}.safetensors", test, work / f"predicted-k{k}-{slug}")
                results.setdefault(name, {})[k] = ap
                print(f"  k={k} {name}: AP@0.5 {ap:.4f} ({minutes:.1f} min with loading)", flush=True)
        ap = forest_ap(pool[:k], test, work / f"predicted-k{k}-forest", args.minutes)
        results.setdefault("random forest", {})[k] = ap
        print(f"  k={k} random forest: AP@0.5 {ap:.4f}", flush=True)
        if args.peer_python:
            ap = stardist_ap(args.peer_python, folder, test, work / f"predicted-k{k}-stardist", args.minutes)
            results.setdefault("StarDist", {})[k] = ap
            print(f"  k={k} StarDist: AP@0.5 {ap:.4f}", flush=True)
    k = max(args.ks)
    for share in args.self_training:
        results.setdefault(f"self-training, surest {share:.0%}", {})[k] = self_trained_ap(
            pool[:k], pool[k:], share, test, work, args.minutes)
    for name in ("from model", "ImageNet"):
        slug = name.replace(" ", "_").lower()
        report(f"ap50_colour_k{k}_{slug}", results[name][k], f">={AP_TARGET}", results[name][k] >= AP_TARGET)
        margin = results[name][k] - results["random forest"][k]
        report(f"ap50_colour_k{k}_{slug}_minus_forest", margin, f">={ABOVE_FOREST}", margin >= ABOVE_FOREST)
    print_table(results, args.ks)
    if args.plot:
        plot(results, args, "labelled colour images (k)", "AP@0.5, mean per image")


def print_table(results: dict[str, dict[int, float]], ks: list[int]) -> None:
    print("\n| path | " + " | ".join(f"k={k}" for k in ks) + " |\n|---|" + "---|" * len(ks))
    for name, by_k in results.items():
        print(f"| {name} | " + " | ".join(f"{by_k[k]:.3f}" if k in by_k else "" for k in ks) + " |")


def plot(results: dict[str, dict[int, float]], args, xlabel: str, ylabel: str) -> None:
    from hitl import _pyplot

    pyplot = _pyplot()
    if pyplot is None:
        return
    figure, axes = pyplot.subplots(figsize=(7.5, 3.5))
    for name, by_k in results.items():
        ks = sorted(by_k)
        axes.plot(ks, [by_k[k] for k in ks], "o-", label=name)
    axes.set(xlabel=xlabel, ylabel=ylabel, xticks=args.ks,
             title=f"A new type from k images (training up to {args.minutes:g} CPU-min)")
    axes.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
