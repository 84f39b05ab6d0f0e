"""One module per ``python -m segmenter bench`` benchmark; each exposes ``register(subparsers)``.

Reports are JSON with the key names of ../shared/BENCHMARK.md; see :func:`write_report`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(o):
    if isinstance(o, float):
        return None if math.isnan(o) or math.isinf(o) else round(o, 6)
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item"):
        return _clean(o.item())
    return o


def write_report(report: dict, out: str | None) -> None:
    """Write ``report`` as JSON to ``out`` (if given); NaN becomes null."""
    if out:
        p = Path(out)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(_clean(report), indent=2) + "\n")


def split_ids(ds, names: str | None, *, with_mask: bool = False) -> list[str]:
    """The image ids of split(s) ``names`` (``+``-joined; ``None`` = every image) of the folder
    dataset ``ds``. Ids a split lists with no image behind them, and (``with_mask``) images without a
    mask, are left out and named on stderr, never dropped without a word."""
    import sys

    ids = ds.splits_of(names)
    for split, missing in ds.missing.items():
        print(f"note: splits/{split}.txt lists {len(missing)} id(s) with no image in images/, left out: "
              f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}", file=sys.stderr)
    ds.missing.clear()
    if with_mask:
        bare = [i for i in ids if not ds.has_mask(i)]
        if bare and len(bare) < len(ids):
            print(f"note: {len(bare)} image(s) of {names or 'the dataset'} have no mask in masks/, left out: "
                  f"{', '.join(bare[:5])}{' …' if len(bare) > 5 else ''}", file=sys.stderr)
        bare_set = set(bare)
        ids = [i for i in ids if i not in bare_set]
    return ids


def note_unseen_classes(meter, class_names: list[str], where: str) -> None:
    """Name on stderr the classes that no scored ground-truth pixel belongs to: a score without
    them may be right (a small subset), or the masks mark a class with 255, which reads 'ignore'."""
    import sys

    gt_n = meter.cm.sum(1)
    unseen = [class_names[c] for c in range(len(class_names)) if gt_n[c] == 0]
    if unseen and gt_n.sum() > 0:
        print(f"note: {where}: no ground-truth pixel of class {', '.join(repr(u) for u in unseen)} among the images "
              "scored (255 in a mask means 'ignore', not a class).", file=sys.stderr)


def dataset_background(ds, ids: list[str], log=print, sample: int = 20) -> int:
    """The dataset's background class: the image border of the foreground-only rule, where a binary
    image starts, the class a foreground-only simulation leaves out. The one class named as a
    background (``annotations.store.BACKGROUND_NAMES``: background, bg, void ...); else, for two
    classes, the one that covers most of the image borders in the ground truth of the first
    ``sample`` images (["lesion", "normal"]); else class 0. Any other than 0 is said on stderr."""
    import sys

    import numpy as np

    from annotations.store import background_named

    named = background_named(ds.classes)
    b, why = 0, ""
    if len(named) == 1:
        b, why = named[0], "by its name"
    elif not named and ds.num_classes == 2:
        counts = np.zeros(2, np.int64)
        for iid in ids[:sample]:
            m = ds.mask(iid)
            edge = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
            counts += np.bincount(edge[edge < 2], minlength=2)[:2]
        if counts[1] > counts[0]:
            b, why = 1, "it covers most of the image borders in the ground truth"
    if b and log:
        print(f"note: class '{ds.classes[b]}' ({b}) is taken as the background ({why}): the image border when "
              "an image has strokes of one other class only, and where a binary image starts", file=sys.stderr)
    return b
