"""``python -m segmenter tags PROJECT``: image-level tags -> pseudo-masks in the project store.

Reads every image's tags (present / absent; the rest unknown) and scribbles, trains the tag
classifier of :mod:`segmenter.cam` on the tagged images, and saves one pseudo-mask per tagged (or
scribbled-and-tagged) image as kind ``pseudo`` with its method as source and a per-pixel
confidence. Scribbles are hard constraints where an image has both.
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("tags", help="image-level tags -> CAM pseudo-masks saved in the project",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("project", metavar="PROJECT", help="project folder")
    p.add_argument("--image-set", default=None, help="only the images of this set")
    p.add_argument("--layer", default="default", help="scribble layer used as hard constraints")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs")
    p.add_argument("--size", type=int, default=None, help="classifier input side in px, multiple of 32")
    p.add_argument("--encoder", default=None, help="smp encoder name (default resnet18)")
    p.add_argument("--encoder-weights", default=None,
                   help="local .safetensors file of pretrained encoder weights (default: none, no download)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dry-run", action="store_true", help="make the masks but save nothing")
    p.set_defaults(func=run)


def tags_matrix(project, image_ids: list[int]):
    """``(N, C)`` int8 tags of the images (1 present, 0 absent, -1 unknown) from the store."""
    import numpy as np

    all_tags = project.all_tags()
    t = np.full((len(image_ids), project.num_classes), -1, np.int8)
    for r, iid in enumerate(image_ids):
        for c, state in all_tags.get(iid, {}).items():
            if 0 <= c < project.num_classes:
                t[r, c] = 1 if state == "present" else 0
    return t


def run(args) -> int:
    from annotations.store import Project
    from segmenter.benchmarks.tags import config_from_args
    from segmenter.cam import UNKNOWN, epochs_for, run_tags
    from segmenter.errors import NoLabelsError

    project = Project.open(args.project)
    infos = project.images(image_set=args.image_set)
    ids = [im.id for im in infos]
    tags = tags_matrix(project, ids)
    keep = [r for r in range(len(ids)) if (tags[r] != UNKNOWN).any()]
    if not keep:
        where = f" in set '{args.image_set}'" if args.image_set else ""
        raise NoLabelsError(f"no image{where} has a tag; tag images (class present / absent) first.")
    ids = [ids[r] for r in keep]
    tags = tags[keep]
    config = config_from_args(args)
    images = [project.load_image(i) for i in ids]
    scribbles = [project.scribbles(i, layer=args.layer) for i in ids]
    print(f"{len(ids)} tagged images, {project.num_classes} classes; training the tag classifier "
          f"({config.encoder}, {epochs_for(config, len(ids))} epochs, {config.size} px)", flush=True)
    res = run_tags(images, tags, project.num_classes, config, scribbles=scribbles,
                   class_names=project.class_names,
                   progress=lambda e, n, loss: print(f"  epoch {e}/{n} loss {loss:.4f}", flush=True))
    for w in res.warnings:
        print(f"warning: {w}")
    if not args.dry_run:
        for iid, m, c in zip(ids, res.masks, res.confidences):
            project.save_mask(iid, m, "pseudo", source=res.method, confidence=c)
    verb = "would save" if args.dry_run else "saved"
    print(f"{verb} {len(ids)} pseudo-masks (source {res.method}); "
          f"training {res.train.seconds:.1f} s, masks {res.infer_seconds:.1f} s")
    return 0
