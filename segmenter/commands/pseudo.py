"""``python -m segmenter pseudo PROJECT``: pseudo-masks from the stored scribbles.

Each scribbled image gets a mask of kind ``pseudo`` with ``source`` = the method's name and the
per-pixel confidence map. Images without strokes are skipped (and listed); naming one with
``--images`` is an error (:class:`~segmenter.errors.NoLabelsError`), and nothing is written for it.
Images whose file is missing or unreadable are skipped, the others done, and named at the end
with the remedy; when that leaves nothing to write, it is an error.
"""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("pseudo", help="pseudo-masks from the stored scribbles (no training)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("project", help="project folder")
    p.add_argument("--method", default=None, help="pseudo-labelling method (default: the tool's default; "
                                                  "see `bench pseudo`)")
    p.add_argument("--images", nargs="*", default=None, help="image names or ids, a name first (default: every scribbled image)")
    p.add_argument("--layer", default="default", help="scribble layer (default: default)")
    p.set_defaults(func=cmd_pseudo)


def pseudo_project(project, method: str | None = None, image_ids=None, layer: str = "default",
                   log=None) -> dict:
    """Write ``pseudo`` masks for ``image_ids`` (``None`` = every image with strokes).

    Returns ``{"written": [ids], "skipped": [ids without strokes], "unreadable": [ids whose file
    is missing or unreadable], "method": name}``. An image named explicitly that has no strokes
    raises :class:`NoLabelsError` before anything is written; when no image with strokes can be
    read, :class:`~annotations.errors.ImageError` names them and the remedy.
    """
    from annotations.errors import ImageError
    from segmenter.errors import NoLabelsError
    from segmenter.pseudo import get_method

    m = get_method(method)
    explicit = image_ids is not None
    ids = list(image_ids) if explicit else [im.id for im in project.images()]
    todo, skipped = [], []
    for iid in ids:
        scr = project.scribbles(iid, layer=layer)
        if scr is None or not (scr != 255).any():
            if explicit:
                name = project.image_info(iid).name
                raise NoLabelsError(f"image '{name}' has no scribbles: draw strokes on it first "
                                    "(no pseudo-mask was written).")
            skipped.append(iid)
        else:
            todo.append((iid, scr))
    if not todo and not explicit:
        from ._layers import other_layers_hint

        raise NoLabelsError("no image in the project has scribbles: draw strokes first (nothing was written)."
                            + other_layers_hint(project, layer))
    written, unreadable = [], []
    for k, (iid, scr) in enumerate(todo):
        try:
            image = project.load_image(iid)
        except ImageError:  # its file is missing or damaged: the others go on, the caller names it
            unreadable.append(iid)
            continue
        res = m(image, scr, project.num_classes, background=project.background_index)
        project.save_mask(iid, res.mask, "pseudo", source=m.name, confidence=res.confidence)
        written.append(iid)
        if log:
            log(f"{k + 1}/{len(todo)} {project.image_info(iid).name}")
    if unreadable and not written:
        infos = [project.image_info(i) for i in unreadable]
        raise ImageError("no pseudo-mask was written; " + project.files_note(infos, "skipped"))
    return {"written": written, "skipped": skipped, "unreadable": unreadable, "method": m.name}


def cmd_pseudo(args) -> int:
    from annotations.store import Project

    from ._layers import resolve_image

    project = Project.open(args.project)
    ids = [resolve_image(project, k) for k in args.images] if args.images else None
    out = pseudo_project(project, args.method, ids, layer=args.layer)
    print(f"{len(out['written'])} pseudo-masks written with '{out['method']}'"
          + (f"; {len(out['skipped'])} images without scribbles skipped" if out["skipped"] else ""))
    if out["unreadable"]:
        print(project.files_note([project.image_info(i) for i in out["unreadable"]], "skipped"))
    return 0
