"""``python -m segmenter bench tags``: image-level tags to pseudo-masks (../shared/BENCHMARK.md §3).

::

    python -m segmenter bench tags --data DIR --split A [--limit N] [--epochs E] [--size PX] [--out FILE]

Tags come from the masks (class c present when any pixel of the mask is c, else absent). Trains
the tag classifier of :mod:`segmenter.cam` on the images, then scores its pseudo-masks for the same
images against the ground truth. Report keys: ``task, n_images, pseudo_miou, pseudo_miou_dataset,
cam_miou, train_seconds`` (``cam_miou``: the raw CAMs, argmax among the tagged classes with the
background threshold, before refinement), plus ``cam_miou_dataset``, ``infer_seconds``,
``pseudo_per_class_iou``, ``warnings`` and the settings.
"""
from __future__ import annotations

import time

import numpy as np


def register(bsub) -> None:
    p = bsub.add_parser("tags", help="image-level tags -> CAM pseudo-masks, scored against the masks",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (../shared/datasets layout)")
    p.add_argument("--split", default=None, help="split name(s), '+'-joined (default: every image)")
    p.add_argument("--limit", type=int, default=None, help="first N images of the split only")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs (default: TagConfig's)")
    p.add_argument("--size", type=int, default=None, help="classifier input side in px, multiple of 32")
    p.add_argument("--encoder", default=None, help="smp encoder name (default resnet18)")
    p.add_argument("--encoder-weights", default=None,
                   help="local .safetensors file of pretrained encoder weights (default: none, no download)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="JSON report path")
    p.set_defaults(func=run)


def tags_from_masks(masks: list[np.ndarray], num_classes: int) -> np.ndarray:
    """``(N, C)`` int8: 1 where the mask holds class c, else 0."""
    t = np.zeros((len(masks), num_classes), np.int8)
    for i, m in enumerate(masks):
        cls = np.unique(m)
        t[i, cls[cls < num_classes]] = 1
    return t


def config_from_args(args):
    """A :class:`segmenter.cam.TagConfig` from the common command-line options (None = default)."""
    from segmenter.cam import TagConfig

    kw = {k: getattr(args, k) for k in ("epochs", "size", "encoder", "encoder_weights", "seed", "device")
          if getattr(args, k, None) is not None}
    return TagConfig(**kw)


def run(args) -> int:
    from annotations.folder import FolderDataset
    from segmenter.benchmarks import split_ids, write_report
    from segmenter.cam import run_tags
    from segmenter.cli import UsageError
    from segmenter.metrics import MeanIoU

    ds = FolderDataset.open(args.data)
    ids = split_ids(ds, args.split, with_mask=True)
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}.")
        ids = ids[: args.limit]
    if not ids:
        raise UsageError(f"{ds.name}: no image with a mask in split {args.split or '(all)'}.")
    config = config_from_args(args)
    images, gts = map(list, zip(*(ds.image_and_mask(i) for i in ids)))
    C = ds.num_classes
    tags = tags_from_masks(gts, C)
    t0 = time.perf_counter()
    res = run_tags(images, tags, C, config, class_names=ds.classes,
                   progress=lambda e, n, loss: print(f"  epoch {e}/{n} loss {loss:.4f}", flush=True))
    total = time.perf_counter() - t0
    cam_m, pseudo_m = MeanIoU(C), MeanIoU(C)
    for gt, cm, pm in zip(gts, res.cam_masks, res.masks):
        cam_m.add(cm, gt)
        pseudo_m.add(pm, gt)
    cover = float(np.mean([(m != 255).mean() for m in res.masks]))
    report = {
        "task": "tags", "dataset": ds.name, "split": args.split, "n_images": len(ids),
        "pseudo_miou": pseudo_m.miou, "pseudo_miou_dataset": pseudo_m.miou_dataset,
        "cam_miou": cam_m.miou, "cam_miou_dataset": cam_m.miou_dataset,
        "train_seconds": res.train.seconds, "infer_seconds": res.infer_seconds, "total_seconds": total,
        "pseudo_coverage": cover, "method": res.method,
        "epochs": res.train.epochs, "size": config.size, "encoder": config.encoder, "seed": config.seed,
        "encoder_weights": config.encoder_weights,
        "background_classes": [ds.classes[c] for c in res.background],
        "pseudo_per_class_iou": dict(zip(ds.classes, pseudo_m.per_class_iou())),
        "cam_per_class_iou": dict(zip(ds.classes, cam_m.per_class_iou())),
        "warnings": res.warnings,
    }
    write_report(report, args.out)
    for w in res.warnings:
        print(f"warning: {w}")
    print(f"{'':12s} {'miou':>7s} {'miou_ds':>8s}")
    print(f"{'cam':12s} {cam_m.miou:7.4f} {cam_m.miou_dataset:8.4f}")
    print(f"{'pseudo':12s} {pseudo_m.miou:7.4f} {pseudo_m.miou_dataset:8.4f}")
    print(f"n_images {len(ids)}  train {res.train.seconds:.1f} s  inference+refinement {res.infer_seconds:.1f} s")
    return 0
