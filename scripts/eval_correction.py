"""Correction strokes on predicted masks, scored against ground truth (the README's figures for
correcting a prediction).

    python scripts/eval_correction.py PROJECT DATASET [--strokes N] [--images NAME ...]

For every image of ``PROJECT`` with a ``predicted`` mask whose stem is an image id of the folder
dataset ``DATASET`` (with a mask): ``N`` simulated correction strokes
(:func:`segmenter.simulate.add_correction`, each in the largest error region of the current
mask), the prediction corrected by them after each (:func:`segmenter.preview.correct_prediction`,
as the app and ``predict`` do) with its stored confidence, and again treating it as hand-painted
(no confidence). Prints the per-image mIoU of the prediction and of both corrected masks.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    from annotations.folder import FolderDataset
    from annotations.store import Project
    from segmenter.metrics import MeanIoU
    from segmenter.preview import correct_prediction
    from segmenter.simulate import SimulationConfig, add_correction

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("project")
    ap.add_argument("dataset")
    ap.add_argument("--strokes", type=int, default=1)
    ap.add_argument("--images", nargs="*", default=None, help="image names (default: every predicted one)")
    args = ap.parse_args(argv)
    p, ds = Project(args.project), FolderDataset.open(args.dataset)
    known = set(ds.image_paths)
    infos = [p.image_by_name(n) for n in args.images] if args.images else p.images()
    infos = [i for i in infos if p.mask_info(i.id, "predicted") is not None and i.stem in known]
    if not infos:
        print("no image with a predicted mask and a ground-truth mask in the dataset", file=sys.stderr)
        return 2
    C = p.num_classes
    meters = {"prediction": MeanIoU(C), "corrected": MeanIoU(C), "corrected (hand-painted)": MeanIoU(C)}
    for k, info in enumerate(infos):
        img, gt = ds.image_and_mask(info.stem)
        pred, conf = p.mask(info.id, "predicted"), p.confidence(info.id, "predicted")
        meters["prediction"].add(pred, gt)
        for name, c in (("corrected", conf), ("corrected (hand-painted)", None)):
            scr, cur = np.full(gt.shape, 255, np.uint8), pred
            for s in range(args.strokes):
                scr = add_correction(scr, cur, gt, C, SimulationConfig(seed=0), seed=k * 10 + s)
                cur = correct_prediction(img, scr, pred, C, confidence=c).mask
            meters[name].add(cur, gt)
    print(f"{len(infos)} images, {args.strokes} stroke(s): "
          + "  ".join(f"{n} {m.miou:.4f}" for n, m in meters.items()))
    return 0


if __name__ == "__main__":
    from annotations.errors import AnnotationError
    from segmenter.errors import SegmenterError

    try:
        raise SystemExit(main())
    except (AnnotationError, SegmenterError) as e:  # a wrong name or folder: one line, as the CLI says it
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
