"""``python -m segmenter bench latency``: the live preview's latency, through the app's own function.

::

    python -m segmenter bench latency [--data DIR] [--scribbles SET] [--limit N] [--size 512] [--out FILE]

The app shows the pseudo-mask after every stroke by calling :func:`segmenter.pseudo.preview`
(the app's handler is a thin wrapper around it, resolved by :func:`preview_function`); this times
exactly that call, one process,
image load excluded, on images resized to ``--size`` pixels on the long side (512 by default).
Each image is timed twice, as an annotator builds it up: with the first half of its strokes
(by connected stroke), then with all of them. Scribbles come from ``DIR/scribbles/SET`` (default:
the first set there), else are simulated from the masks (:mod:`segmenter.simulate`, seed 0).
Without ``--data``: ``../shared/datasets/grabcut`` beside the repository if present, else
synthetic discs. Report keys: ``task: "latency", n, p50_s, p95_s, size`` (+ ``mean_s``,
``max_s``, ``method``, ``dataset``, ``n_images``, ``correct``).

``--correct`` times the other path of the same function: strokes correcting a prediction (an
image that has a predicted mask; :func:`segmenter.preview.correct_prediction`), with the image's
ground-truth mask standing in for a sure prediction (every region lends seeds: the most work).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO / ".." / "shared" / "datasets" / "grabcut"


def register(bsub) -> None:
    p = bsub.add_parser("latency", help="live-preview latency (the app's preview function) on 512 px images",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="dataset folder (default: ../shared/datasets/grabcut, else synthetic)")
    p.add_argument("--scribbles", default=None, help="scribble set under DIR/scribbles (default: the first; "
                                                      "simulated when there is none)")
    p.add_argument("--limit", type=int, default=30, help="first N images (default 30)")
    p.add_argument("--size", type=int, default=512, help="long side of the images in pixels (default 512)")
    p.add_argument("--method", default=None, help="pseudo-labelling method (default: the app's default)")
    p.add_argument("--correct", action="store_true",
                   help="time strokes correcting a prediction (the ground-truth mask stands in for it)")
    p.add_argument("--out", default=None, help="JSON report path")
    p.set_defaults(func=run)


def resize_sample(image: np.ndarray, labels: list[np.ndarray], size: int):
    """Image to ``size`` on the long side (area / cubic), label maps with nearest neighbour."""
    import cv2

    h, w = image.shape[:2]
    s = size / max(h, w)
    hw = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    img = cv2.resize(image, hw, interpolation=interp)
    return img, [cv2.resize(lab, hw, interpolation=cv2.INTER_NEAREST) for lab in labels]


def synthetic_samples(n: int, size: int, seed: int = 0):
    """``n`` noisy discs of ``size`` px with one stroke inside and one along the top: ``(image, scribbles)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        c = size / 2 + rng.uniform(-size / 10, size / 10, 2)
        gt = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2) < (size * 0.28) ** 2
        base = np.where(gt, 185.0, 65.0) + rng.normal(0, 20, (size, size))
        img = np.clip(np.stack([base, base * 0.85 + 25 * gt, base * 0.6 + 40 * ~gt], -1), 0, 255).astype(np.uint8)
        scr = np.full((size, size), 255, np.uint8)
        cy, cx, t = int(c[0]), int(c[1]), max(2, size // 64)
        scr[cy - t:cy + t, cx - size // 8:cx + size // 8] = 1
        scr[size // 20:size // 20 + t, size // 10:size - size // 10] = 0
        yield img, scr


def dataset_samples(data: Path, scribble_set: str | None, limit: int | None, size: int, with_mask: bool = False):
    """``(image, scribbles)`` at ``size`` px from a folder dataset; simulated strokes when it has none.
    ``with_mask``: ``(image, scribbles, mask)``, images without a ground-truth mask skipped."""
    from annotations.errors import AnnotationError
    from annotations.folder import FolderDataset

    from segmenter.simulate import SimulationConfig, simulate_scribbles

    ds = FolderDataset.open(data)
    sets = ds.scribble_sets()
    if scribble_set is not None and scribble_set not in sets:
        raise AnnotationError(f"{data}: no scribble set '{scribble_set}' (sets: {', '.join(sets) or 'none'}).")
    use = scribble_set or (sets[0] if sets else None)
    if limit is not None and limit < 1:
        raise AnnotationError(f"--limit must be >= 1, got {limit}.")
    k, simulated = 0, 0
    for sid in ds.ids:
        if limit is not None and k >= limit:
            break
        if with_mask and not ds.has_mask(sid):
            continue
        image, gt = ds.image_and_mask(sid) if ds.has_mask(sid) else (ds.image(sid), None)
        scr = ds.scribbles(use, sid, shape=image.shape[:2]) if use else None
        if scr is None:
            if gt is None:
                continue
            scr = simulate_scribbles(gt, ds.num_classes, SimulationConfig(seed=0))
            simulated += bool(use)
        if not (scr != 255).any():
            continue
        k += 1
        img, maps = resize_sample(image, [scr, gt] if with_mask else [scr], size)
        yield (img, *maps)
    if simulated:
        import sys

        print(f"note: {simulated} image(s) have no strokes in scribble set '{use}': simulated strokes from their "
              "masks stand in", file=sys.stderr)


def first_half_of_strokes(scribbles: np.ndarray) -> np.ndarray:
    """The scribble map with only the first half (at least one) of its connected strokes."""
    from scipy import ndimage

    lab, n = ndimage.label(scribbles != 255, structure=np.ones((3, 3)))
    if n <= 1:
        return scribbles
    keep = np.isin(lab, np.arange(1, n // 2 + 1))
    return np.where(keep, scribbles, 255).astype(np.uint8)


def preview_function():
    """The function the app calls for its live preview (``app.handlers`` delegates here):
    :func:`segmenter.pseudo.preview` ``(image, scribbles, num_classes, method=None, prior=None,
    colors=None, alpha=0.5, prediction=None, prediction_confidence=None, max_side=None) -> (PseudoResult,
    overlay)``."""
    from segmenter.pseudo import preview

    return preview


def measure(samples, num_classes: int, method: str | None = None, correct: bool = False) -> dict:
    """Time the app's preview function (:func:`preview_function`) on each ``(image, scribbles)``
    (half, then all strokes); ``correct``: on ``(image, scribbles, prediction)``, the strokes
    correcting the prediction."""
    from segmenter.pseudo import DEFAULT_METHOD

    preview = preview_function()

    samples = list(samples)
    if not samples:
        from annotations.errors import AnnotationError

        raise AnnotationError("no image with scribbles to time.")
    def pred(sample):
        return sample[2] if correct else None

    preview(samples[0][0], samples[0][1], num_classes, method=method, prediction=pred(samples[0]))  # warm-up
    times = []
    for sample in samples:
        img, scr = sample[0], sample[1]
        for s in (first_half_of_strokes(scr), scr):
            t0 = time.perf_counter()
            preview(img, s, num_classes, method=method, prediction=pred(sample))
            times.append(time.perf_counter() - t0)
    t = np.asarray(times)
    return {"task": "latency", "method": method or DEFAULT_METHOD, "function": "segmenter.pseudo.preview",
            "n": int(t.size), "n_images": len(samples), "p50_s": float(np.percentile(t, 50)),
            "p95_s": float(np.percentile(t, 95)), "mean_s": float(t.mean()), "max_s": float(t.max()),
            "size": int(max(samples[0][0].shape[:2])), "correct": bool(correct)}


def check_size(size: int) -> None:
    """``--size`` of the latency and app benchmarks: at least 16 px on the long side."""
    if size < 16:
        from annotations.errors import AnnotationError

        raise AnnotationError(f"--size must be at least 16 pixels, not {size}.")


def resolve_data(data: str | None) -> Path | None:
    """``--data`` as given, else ``../shared/datasets/grabcut`` beside the repository if present,
    else None (synthetic images)."""
    if data:
        return Path(data)
    return DEFAULT_DATA if (DEFAULT_DATA / "meta.json").is_file() else None


def run(args) -> int:
    from segmenter.benchmarks import write_report

    check_size(args.size)
    data = resolve_data(args.data)
    if data is not None:
        from annotations.folder import FolderDataset

        num_classes = FolderDataset.open(data).num_classes
        samples = dataset_samples(data, args.scribbles, args.limit, args.size, with_mask=args.correct)
        name = data.resolve().name
    else:
        if args.correct:
            from annotations.errors import AnnotationError

            raise AnnotationError("--correct needs --data: a dataset with ground-truth masks to stand in for predictions.")
        num_classes = 2
        samples = synthetic_samples(args.limit or 30, args.size)
        name = "synthetic"
    report = measure(samples, num_classes, args.method, correct=args.correct)
    report["dataset"] = name
    write_report(report, args.out)
    print(f"latency  {name}{'  correcting a prediction' if args.correct else ''}  size {report['size']} px  "
          f"method {report['method']}  n {report['n']}  "
          f"p50 {report['p50_s']:.3f} s  p95 {report['p95_s']:.3f} s  max {report['max_s']:.3f} s")
    return 0
