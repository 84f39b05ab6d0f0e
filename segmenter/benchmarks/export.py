"""``python -m segmenter bench export``: time a COCO RLE export of a synthetic project.

Builds (outside the timed part) a project of N images of SIZE x SIZE with random-blob masks
over a few classes (some 255 regions too), then times ``export_project(project, FORMAT, out)``:
reading every mask from the store, encoding, writing the JSON and copying the images.

Report: ``{"task": "export", "format", "n_masks", "size", "seconds", "masks_per_s", "cpu_seconds", ...}``
(``seconds``: wall clock of the export; ``cpu_seconds``: process CPU time, all threads, which
shows the cost when the machine is shared).
"""
from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path


def blob_mask(rng, size: int, n_classes: int):
    """(size, size) uint8: smooth random blobs of classes 0..n_classes-1, a few 255 pixels."""
    import cv2
    import numpy as np

    mid = max(8, size // 4)
    low = rng.random((n_classes, 12, 12)).astype(np.float32)
    up = np.stack([cv2.resize(c, (mid, mid), interpolation=cv2.INTER_CUBIC) for c in low])
    small = up.argmax(0).astype(np.uint8)
    small[np.abs(up[0] - up[1]) < 0.004] = 255  # thin ignore bands where classes 0 and 1 meet
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)


def synthetic_image(k: int, size: int) -> bytes:
    """A small, unique PNG (a gradient with the index written in the first pixels)."""
    import numpy as np
    from PIL import Image

    g = (np.add.outer(np.arange(size), np.arange(size)) * (255.0 / (2 * size))).astype(np.uint8)
    g[0, :4] = np.frombuffer(int(k).to_bytes(4, "little"), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def build_project(root: Path, n: int, size: int, n_classes: int = 4, seed: int = 0):
    import numpy as np

    from annotations.store import Project

    rng = np.random.default_rng(seed)
    p = Project.create(root, ["background"] + [f"class{i}" for i in range(1, n_classes)])
    with p.transaction():
        for k in range(n):
            info = p.add_image(synthetic_image(k, size), name=f"img{k:05d}.png")
            p.save_mask(info.id, blob_mask(rng, size, n_classes), "final" if k % 2 else "predicted",
                        source="bench")
    return p


def run(args) -> dict:
    from annotations.formats import export_project

    from . import write_report

    from segmenter.cli import UsageError

    if args.n < 1 or args.size < 8:
        raise UsageError(f"--n must be >= 1 and --size >= 8, got {args.n} and {args.size}.")
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise UsageError(f"--workdir {args.workdir}: no such folder.")
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        p = build_project(tmp / "project", args.n, args.size)
        build_s = time.perf_counter() - t0
        extra = {"images": "none"} if args.no_images else {}
        t0, c0 = time.perf_counter(), time.process_time()
        res = export_project(p, args.format, tmp / "export", masks="best", **extra)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        out_bytes = sum(f.stat().st_size for f in (tmp / "export").rglob("*") if f.is_file())
        report = {"task": "export", "format": args.format, "n_masks": res.masks, "n_images": args.n,
                  "size": args.size, "seconds": seconds, "cpu_seconds": cpu, "masks_per_s": res.masks / seconds if seconds else None,
                  "images_copied": res.images, "output_mb": out_bytes / 2**20, "build_seconds": build_s}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_report(report, args.out)
    print(f"export {report['format']}: {report['n_masks']} masks of {args.size}x{args.size} in "
          f"{report['seconds']:.2f} s ({report['masks_per_s']:.0f} masks/s, {cpu:.2f} s CPU; {report['images_copied']} images "
          f"copied, {report['output_mb']:.1f} MB written; project built in {build_s:.1f} s)")
    return report


def register(bsub) -> None:
    p = bsub.add_parser("export", help="time exporting N masks (default: COCO RLE)",
                        description="Build a synthetic project of N random-blob masks, time its export.")
    p.add_argument("--n", type=int, default=1000, help="number of images / masks (default 1000)")
    p.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    p.add_argument("--format", default="coco", help="format to export (default coco)")
    p.add_argument("--no-images", action="store_true", help="do not copy the image files (masks only)")
    p.add_argument("--workdir", default=None, help="folder for the temporary project (default: system temp)")
    p.add_argument("--out", help="JSON report file")
    p.set_defaults(func=lambda a: (run(a), 0)[1])
