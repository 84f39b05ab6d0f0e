"""``python -m segmenter bench pseudo``: scribbles to pseudo-masks, against GrabCut and the random walker.

Exactly ../shared/BENCHMARK.md §1::

    python -m segmenter bench pseudo --data DIR --scribbles SET [--split NAME] [--limit N] [--out FILE]
        [--methods a,b,...] [--curve]

``SET`` is a folder under ``DIR/scribbles/`` or ``simulated[:SEED]`` (scribbles simulated from the
masks by :mod:`segmenter.simulate`). Baselines, in the same run: ``grabcut`` (OpenCV ``grabCut``
seeded with the strokes as definite foreground/background, the rest "probably background", 5
iterations, binary datasets only; a binary image with no background stroke gets the image border
as background) and ``random_walker`` (scikit-image, ``mode='cg_j'``, ``beta=130``, full resolution).
``--curve`` adds ``noc85`` / ``noc90``: correction strokes (simulated, in the largest error
region) needed to reach that per-image IoU, at most 20 (20 = not reached).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

BASELINES = ("grabcut", "random_walker")
MAX_CLICKS = 20


def register(bsub) -> None:
    p = bsub.add_parser("pseudo", help="scribbles -> pseudo-masks, with the grabcut/random_walker baselines",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (../shared/datasets layout)")
    p.add_argument("--scribbles", required=True, help="scribble set under DIR/scribbles, or simulated[:SEED]")
    p.add_argument("--split", default=None, help="split name (default: every image)")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--out", default=None, help="JSON report path")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to run (default: every registered method and both baselines)")
    p.add_argument("--curve", action="store_true", help="also count correction strokes to IoU 0.85 / 0.90")
    p.add_argument("--foreground-only", action="store_true",
                   help="simulated scribbles: no stroke on class 0")
    p.add_argument("--strokes", type=int, default=1, help="simulated scribbles: strokes per class")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- baselines
def grabcut_baseline(image: np.ndarray, scribbles: np.ndarray, num_classes: int, background: int = 0) -> np.ndarray:
    """OpenCV GrabCut, 5 iterations, strokes as definite FG/BG, the rest probable background;
    image border as background when there is no background stroke. ``background``: the
    background class (0 or 1). ``(H, W)`` uint8 mask."""
    import cv2

    from segmenter.pseudo import functional as F

    if num_classes != 2:
        raise ValueError("grabcut is a binary baseline")
    bg, fg = int(background), 1 - int(background)
    img = image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)
    img = np.ascontiguousarray(img[..., ::-1])  # OpenCV wants BGR
    scr = scribbles
    if not (scr == bg).any():
        scr = F.add_border_background(scr, 1, bg)
    m = np.full(scr.shape, cv2.GC_PR_BGD, np.uint8)
    m[scr == bg] = cv2.GC_BGD
    m[scr == fg] = cv2.GC_FGD
    if not (m == cv2.GC_FGD).any():
        return np.full(scr.shape, bg, np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.grabCut(img, m, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    return np.where((m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD), fg, bg).astype(np.uint8)


def random_walker_baseline(image: np.ndarray, scribbles: np.ndarray, num_classes: int,
                           background: int = 0) -> np.ndarray:
    """scikit-image ``random_walker`` at full resolution, ``mode='cg_j'``, ``beta=130``; a single
    scribbled class other than ``background`` gets the image border as background. ``(H, W)`` uint8 mask."""
    from skimage.segmentation import random_walker

    from segmenter.pseudo import functional as F

    scr = scribbles
    classes = F.scribbled_classes(scr)
    if classes.size == 1 and classes[0] != background:
        scr = F.add_border_background(scr, 1, background)
        classes = F.scribbled_classes(scr)
    if classes.size == 1:
        return np.full(scr.shape, classes[0], np.uint8)
    labels = np.zeros(scr.shape, np.int32)
    for i, c in enumerate(classes):
        labels[scr == c] = i + 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "probability range outside [0, 1]"
        out = random_walker(image, labels, beta=130, mode="cg_j",
                            channel_axis=-1 if image.ndim == 3 else None)
    return classes[np.clip(out - 1, 0, classes.size - 1)].astype(np.uint8)


# ----------------------------------------------------------------------------- the run
#: Images larger than this are reported one by one (with each method's seconds): the baselines run
#: at full resolution, as BENCHMARK.md fixes them, and take minutes on a 12-megapixel photo (the
#: random walker 141 s at 1500 x 2000), so a run of such photos looked hung between its reports.
BIG_IMAGE_PIXELS = 2_000_000


def _make_runner(name: str, num_classes: int, background: int = 0):
    from segmenter.pseudo import get_method

    if name == "grabcut":
        return lambda img, scr: grabcut_baseline(img, scr, num_classes, background)
    if name == "random_walker":
        return lambda img, scr: random_walker_baseline(img, scr, num_classes, background)
    method = get_method(name[len("ours:"):] if name.startswith("ours:") else name)
    return lambda img, scr: method(img, scr, num_classes, background=background).mask


def _noc(runner, image, scribbles, gt, num_classes, first_mask, sim_cfg) -> tuple[int, int]:
    """Correction strokes to reach IoU 0.85 and 0.90 (MAX_CLICKS = not reached)."""
    from segmenter.metrics import image_iou
    from segmenter.simulate import add_correction

    need = {0.85: MAX_CLICKS, 0.90: MAX_CLICKS}
    scr, mask = scribbles, first_mask
    for k in range(MAX_CLICKS + 1):
        iou = image_iou(mask, gt, num_classes)
        for thr in need:
            if need[thr] == MAX_CLICKS and iou >= thr:
                need[thr] = k
        if iou >= 0.90 or k == MAX_CLICKS:
            break
        new = add_correction(scr, mask, gt, num_classes, sim_cfg, seed=k + 1)
        if np.array_equal(new, scr):
            break
        scr = new
        mask = runner(image, scr)
    return need[0.85], need[0.90]


def evaluate(data: str | Path, scribbles: str, split: str | None = None, limit: int | None = None,
             methods: list[str] | None = None, curve: bool = False, foreground_only: bool = False,
             strokes: int = 1, log=print) -> dict:
    """Run the benchmark and return the report dict (keys of BENCHMARK.md §1)."""
    import sys

    from annotations.importer import name_list

    def log_note(text: str) -> None:
        if log:
            print(f"note: {text}", file=sys.stderr)

    from annotations.folder import FolderDataset
    from segmenter.benchmarks import dataset_background, note_unseen_classes, split_ids
    from segmenter.cli import UsageError
    from segmenter.metrics import MeanIoU
    from segmenter.pseudo import DEFAULT_METHOD, list_methods
    from segmenter.simulate import SimulationConfig, simulate_scribbles

    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}.")
    ds = FolderDataset.open(data)
    for where, why in ds.skipped:  # e.g. a second image file of one stem
        log_note(f"{where} left out: {why}")
    ids = split_ids(ds, split, with_mask=True)
    if limit:
        ids = ids[:limit]
    if not ids:
        raise UsageError(f"{ds.name}: no image with a ground-truth mask to evaluate.")
    simulated = scribbles.startswith("simulated")
    sim_seed = 0
    if simulated:
        _, _, s = scribbles.partition(":")
        try:
            sim_seed = int(s) if s else 0
            if sim_seed < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--scribbles {scribbles}: the seed after 'simulated:' must be a whole number "
                             ">= 0.") from None
    elif scribbles not in ds.scribble_sets():
        raise UsageError(f"{ds.name}: no scribble set '{scribbles}' (known: {', '.join(ds.scribble_sets()) or 'none'}, "
                         "or simulated[:SEED]).")
    C = ds.num_classes
    names = methods or (list_methods() + list(BASELINES))
    known = set(list_methods()) | set(BASELINES)
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"unknown method(s) {', '.join(bad)}; valid: {', '.join(sorted(known))}.")
    if C != 2 and "grabcut" in names:
        names = [n for n in names if n != "grabcut"]
        log("grabcut skipped: the dataset is not binary")
    background = dataset_background(ds, ids, log)
    runners = {n: _make_runner(n, C, background) for n in names}
    meters = {n: MeanIoU(C) for n in names}
    times = {n: [] for n in names}
    nocs = {n: [] for n in names}
    per_image = []
    sim_cfg = SimulationConfig(seed=sim_seed, foreground_only=foreground_only, strokes_per_class=strokes,
                               background=background)
    skipped, warm, unscored = [], False, []
    for k, iid in enumerate(ids):
        image, gt = ds.image_and_mask(iid)
        scr = _scribbles_for(ds, scribbles, iid, simulated, sim_cfg, C, gt)
        if scr is None or not (scr != 255).any():
            skipped.append(iid)
            continue
        if not warm:  # warm-up (imports, first-call costs) on the first image with strokes, not timed
            for n in names:
                if n not in BASELINES:
                    runners[n](image, scr)
            warm = True
        row = {"id": iid}
        for n in names:
            t0 = time.perf_counter()
            mask = runners[n](image, scr)
            dt = time.perf_counter() - t0
            times[n].append(dt)
            row[n] = meters[n].add(mask, gt)
            if curve:
                nocs[n].append(_noc(runners[n], image, scr, gt, C, mask, sim_cfg))
        per_image.append(row)
        if row[names[0]] is None or np.isnan(row[names[0]]):  # no scored pixel (an all-ignore mask): in no mean
            unscored.append(iid)
        big = image.shape[0] * image.shape[1] > BIG_IMAGE_PIXELS
        if log and ((k + 1) % 10 == 0 or big):
            log(f"  {k + 1}/{len(ids)} " + "  ".join(f"{n}={meters[n].miou:.3f}" for n in names)
                + (f"  ({iid}, {image.shape[1]}x{image.shape[0]}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in names)
                   + ")" if big else ""))
    if not per_image:
        raise UsageError(f"{ds.name}: none of the {len(ids)} images has a stroke in scribble set '{scribbles}'.")
    if skipped:
        log_note(f"{len(skipped)} image(s) have no strokes in scribble set '{scribbles}', left out: "
                 f"{name_list(skipped, 5)}")
    if unscored:
        log_note(f"{len(unscored)} image(s) have no scored pixel in their mask (all ignore), so no score: "
                 f"{name_list(unscored, 5)}")
    note_unseen_classes(meters[names[0]], ds.classes, ds.name)
    report = {"task": "pseudo", "dataset": ds.name, "scribbles": scribbles, "split": split,
              "n_images": len(per_image), "skipped_no_scribbles": len(skipped), "unscored": len(unscored),
              "default": DEFAULT_METHOD,
              "background": background,
              "methods": {}, "per_image": per_image}
    for n in names:
        t = np.array(times[n]) if times[n] else np.array([np.nan])
        entry = {"miou": meters[n].miou, "miou_dataset": meters[n].miou_dataset,
                 "p50_s": float(np.percentile(t, 50)), "p95_s": float(np.percentile(t, 95)),
                 "n": len(times[n]), "baseline": n in BASELINES}
        if curve and nocs[n]:
            arr = np.array(nocs[n], float)
            entry["noc85"] = float(arr[:, 0].mean())
            entry["noc90"] = float(arr[:, 1].mean())
            entry["noc85_per_image"] = arr[:, 0].astype(int).tolist()
            entry["noc90_per_image"] = arr[:, 1].astype(int).tolist()
        report["methods"][n] = entry
    return report


def _scribbles_for(ds, scribbles, iid, simulated, sim_cfg, C, gt):
    if simulated:
        from dataclasses import replace

        from segmenter.simulate import simulate_scribbles

        # a per-image seed derived from the run seed, so subsets give the same strokes
        cfg = replace(sim_cfg, seed=sim_cfg.seed * 100003 + _stable(iid))
        return simulate_scribbles(gt, C, cfg)
    return ds.scribbles(scribbles, iid, shape=gt.shape)


def _stable(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode()) % 100000


def format_table(report: dict) -> str:
    lines = [f"{report['dataset']} / {report['scribbles']}: {report['n_images']} images (default: {report['default']})",
             f"{'method':<18}{'miou':>8}{'miou_ds':>9}{'p50_s':>9}{'p95_s':>9}" +
             ("" if not any("noc85" in m for m in report["methods"].values()) else f"{'noc85':>8}{'noc90':>8}")]
    for n, m in report["methods"].items():
        line = f"{n:<18}{m['miou']:>8.3f}{m['miou_dataset']:>9.3f}{m['p50_s']:>9.3f}{m['p95_s']:>9.3f}"
        if "noc85" in m:
            line += f"{m['noc85']:>8.2f}{m['noc90']:>8.2f}"
        lines.append(line)
    return "\n".join(lines)


def run(args) -> int:
    from segmenter.benchmarks import write_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = evaluate(args.data, args.scribbles, split=args.split, limit=args.limit, methods=methods,
                      curve=args.curve, foreground_only=args.foreground_only, strokes=args.strokes)
    print(format_table(report))
    write_report(report, args.out)
    return 0
