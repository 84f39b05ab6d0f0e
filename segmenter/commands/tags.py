"""``python -m segmenter tags PROJECT``: image-level tags -> pseudo-masks in the project store.

Reads every image's tags (present / absent; the rest unknown) and scribbles, trains the tag
classifier of :mod:`segmenter.cam` on the tagged images, and saves one pseudo-mask per tagged (or
scribbled-and-tagged) image as kind ``pseudo`` with its method as source and a per-pixel
confidence. Scribbles are hard constraints where an image has both.
"""
from __future__ import annotations

from segmenter.errors import NoLabelsError


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


def run(args) -> int:
    from annotations.store import Project
    from segmenter.benchmarks.tags import config_from_args
    from segmenter.cam import tags_project

    project = Project.open(args.project)
    ids = project.image_set(args.image_set) if args.image_set else [im.id for im in project.images()]
    config = config_from_args(args)
    try:
        summary = tags_project(project, config, ids, layer=args.layer, save=not args.dry_run,
                               on_stage=lambda m: print(m, flush=True),
                               progress=lambda e, n, loss: print(f"  epoch {e}/{n} loss {loss:.4f}", flush=True))
    except NoLabelsError as e:
        msg = str(e) + (f" (looked in set '{args.image_set}')" if args.image_set else "")
        if not project.all_tags():  # say how, from here
            import shlex

            msg += (f" Set tags with: python -m segmenter tag {shlex.quote(args.project)} IMAGE... --present CLASS "
                    "--absent CLASS (or --all).")
        raise NoLabelsError(msg) from None
    for w in summary.warnings:
        print(f"warning: {w}")
    print(summary.message())
    return 0
