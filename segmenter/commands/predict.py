"""``python -m segmenter predict PROJECT``: masks of kind ``predicted`` for all or some images.

Each mask is saved with the model version, a confidence map and the image's uncertainty (mean
normalised entropy); the most uncertain images are listed: annotate those next. On an image with
strokes the prediction is corrected by them, as in the app's live preview: a stroke's pixels keep
its class, so an export never contradicts what a person drew. On an image without strokes whose pseudo-mask comes from its tags, where the model
misses a class tagged present that the tags' mask shows, the tags' mask is stored
(``--ignore-scribbles``: the model's own output everywhere).
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict masks with a trained model",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("project", help="project folder")
    p.add_argument("--model", default=None, help="model name or checkpoint path (default: the newest)")
    p.add_argument("--images", nargs="*", default=None, help="image names or ids, a name first (default: every image)")
    p.add_argument("--image-set", default=None, help="only the images of this set")
    p.add_argument("--status", default=None, help="only images of this status, each image's furthest (untouched, tagged, scribbled, pseudo, "
                        "predicted, imported, final: an image with strokes and a prediction is predicted)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--mode", default="resize", choices=("resize", "tile"),
                   help="resize to the model's size and back (default), or tile at native resolution")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--top", type=int, default=10, help="list this many most uncertain images (0: none)")
    p.add_argument("--layer", default="default", help="scribble layer whose strokes correct the predictions "
                                                      "(default: default)")
    p.add_argument("--ignore-scribbles", action="store_true",
                   help="store the model's own output, not corrected by the images' strokes nor "
                        "replaced by their tags' masks")
    p.set_defaults(func=cmd_predict)


def _select(project, args) -> list[int] | None:
    """The images to predict: ``--images``, or those of ``--status`` and / or ``--image-set`` (all
    given must hold), or ``None`` (every image). A selection that matches nothing is refused
    naming what was asked, as is ``--images`` with the others (one would silently win)."""
    from segmenter.cli import UsageError

    from ._layers import resolve_image

    if args.images:
        if args.image_set or args.status:
            other = " and ".join(f"--{k.replace('_', '-')} {v}" for k, v in (("status", args.status),
                                                                             ("image_set", args.image_set)) if v)
            raise UsageError(f"--images names the images to predict; {other} would be ignored: give one or the "
                             "other.")
        return [resolve_image(project, key) for key in args.images]
    if args.image_set or args.status:
        if args.image_set:
            project.image_set(args.image_set)  # a set the project lacks: "no image set named ..." with the known ones
        ids = [im.id for im in project.images(status=args.status, image_set=args.image_set)]
        if not ids:
            asked = " in ".join(x for x in (f"with status '{args.status}'" if args.status else "",
                                            f"image set '{args.image_set}'" if args.image_set else "") if x)
            counts = ", ".join(f"{k} {v}" for k, v in project.counts()["status"].items() if v)
            raise UsageError(f"no image {asked} to predict (a status is each image's furthest: {counts}; "
                             "python -m segmenter status lists them).")
        return ids
    return None


def cmd_predict(args) -> int:
    import sys

    from annotations.store import Project
    from segmenter.predict import predict_project

    if args.top < 0:
        from segmenter.cli import UsageError

        raise UsageError(f"--top {args.top}: the number of most uncertain images to list must be 0 or more.")
    project = Project.open(args.project)
    ids = _select(project, args)

    live = sys.stderr.isatty()  # a log or a pipe gets the last count only, not one line of all of them

    def progress(done, total):
        if live or done == total:
            sys.stderr.write(f"\rpredicted {done}/{total}")
            sys.stderr.flush()

    summary = predict_project(project, args.model, ids, device=args.device, tta=args.tta, mode=args.mode,
                              batch_size=args.batch_size, callback=progress, scribbles=not args.ignore_scribbles,
                              layer=args.layer)
    sys.stderr.write("\n")
    if not args.ignore_scribbles:
        from ._layers import note_other_layers

        note_other_layers(project, args.layer, "the predictions were not corrected by any strokes.")
    for line in summary.lines(args.top):
        print(line)
    return 0
