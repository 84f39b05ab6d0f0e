"""``python -m segmenter tag PROJECT IMAGE...``: set image-level tags (what ``tags`` learns from).

A tag says a class is ``present`` in an image or ``absent`` from it; ``unknown`` (no tag) is the
default and removes one. ``--list`` prints each image's tags. Every name is checked before
anything is written, and all the tags are set in one transaction. A class is not tagged absent on
an image that has strokes of it (``predict`` would drop them): nothing is tagged, and the message
names the class, the image and the stroke pixels.

    python -m segmenter tag myproj cat1.png cat2.png --present cat --absent dog
    python -m segmenter tag myproj --all --absent car
    python -m segmenter tag myproj --list
"""
from __future__ import annotations

import argparse

from annotations.schema import TAG_STATES



class _ImagesAnywhere(argparse.ArgumentParser):
    """Takes the IMAGE arguments before and after the options (``tag P --present cat a.png b.png``);
    a plain parser stops collecting them at the first option."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing:  # parse_known_intermixed_args's own passes
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def register(sub) -> None:
    p = sub.add_parser("tag", help="set image-level tags (present / absent / unknown), or list them",
                       description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
                       epilog="examples:\n" + __doc__.rstrip().split("\n\n")[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", metavar="PROJECT", help="project folder")
    p.add_argument("images", metavar="IMAGE", nargs="*", help="image names or ids, a name first")
    p.add_argument("--all", action="store_true", help="every image of the project")
    for state in TAG_STATES:
        p.add_argument(f"--{state}", action="append", default=[], metavar="CLASS[,CLASS]",
                       help=("classes to untag (back to unknown)" if state == "unknown" else f"classes {state}")
                            + ", by name or index; repeatable")
    p.add_argument("--list", action="store_true", help="print each image's tags (the named images, or every image)")
    p.set_defaults(func=cmd_tag)
    p.__class__ = _ImagesAnywhere  # the subparsers action makes every parser of one class


def _classes(project, option: str, values: list[str]) -> list:
    """The classes ``--option`` names (comma-separated, repeatable), each once."""
    out = []
    for value in values:
        for key in value.split(","):
            if not key.strip():
                from segmenter.cli import UsageError

                raise UsageError(f"--{option} {value!r} has an empty class name; list classes as CLASS,CLASS.")
            c = project.class_info(key.strip())
            if c not in out:
                out.append(c)
    return out


def absent_refusal(project, image_id: int, cls, layer: str | None = None, where: str = "on this image") -> str | None:
    """Why class ``cls`` (a ``ClassInfo``) cannot be tagged absent on the image, or ``None``: it has
    strokes there (in any scribble layer; a layer other than ``layer`` is named). ``predict`` would
    drop those strokes (it suppresses an absent class) and the export would contradict them."""
    counts = {}
    for name in project.scribble_layers(image_id):
        scr = project.scribbles(image_id, name)
        n = 0 if scr is None else int((scr == cls.idx).sum())
        if n:
            counts[name] = n
    if not counts:
        return None
    n = sum(counts.values())
    others = [name for name in counts if name != layer]
    in_layers = (f" ({', '.join(f'{counts[x]} in scribble layer {x!r}' for x in others)})"
                 if layer is not None and others else "")
    return f"{cls.name} has {n} stroke pixel{'s' if n != 1 else ''} {where}{in_layers}: erase them first, or tag it present."


def _tag_line(project, image, names: dict[int, str]) -> str:
    tags = project.tags(image.id)
    parts = [f"{state} {', '.join(names[c] for c, s in tags.items() if s == state)}"
             for state in ("present", "absent") if state in tags.values()]
    return f"{image.id:4d} {image.name}: {'; '.join(parts) or 'no tags'}"


def cmd_tag(args) -> int:
    from annotations.errors import AnnotationError
    from annotations.store import Project
    from segmenter.cli import UsageError

    from ._layers import resolve_image

    project = Project.open(args.project)
    if args.all and args.images:
        raise UsageError("name images or give --all, not both.")
    plan = {state: _classes(project, state, getattr(args, state)) for state in TAG_STATES}
    setting = any(plan.values())
    if not setting and not args.list:
        raise UsageError("nothing to do: give --present, --absent or --unknown with the classes to tag, "
                         "or --list to see the tags.")
    seen: dict[int, str] = {}
    for state, classes in plan.items():
        for c in classes:
            if c.idx in seen:
                raise UsageError(f"class '{c.name}' is given as both --{seen[c.idx]} and --{state}; choose one.")
            seen[c.idx] = state
    if args.all or (not args.images and not setting):
        images = project.images()
    elif args.images:
        images = [project.image_info(resolve_image(project, key)) for key in args.images]
        images = list({im.id: im for im in images}.values())
    else:
        raise UsageError("name the images to tag (names or ids), or give --all for every image.")
    if setting:
        if not images:
            raise UsageError("the project has no images to tag: import some first.")
        refusals = [r for im in images for c in plan["absent"]
                    if (r := absent_refusal(project, im.id, c, where=f"on {im.name}"))]
        if refusals:
            more = f" (and {len(refusals) - 5} more)" if len(refusals) > 5 else ""
            raise AnnotationError("nothing was tagged: " + " ".join(refusals[:5]) + more)
        with project.transaction():
            for im in images:
                for idx, state in seen.items():
                    project.set_tag(im.id, idx, state)
        what = "; ".join(f"{state} {', '.join(c.name for c in classes)}" for state, classes in plan.items() if classes)
        target = f"{len(images)} images" if len(images) > 3 else ", ".join(im.name for im in images)
        print(f"tagged {target}: {what}")
    if args.list:
        names = {c.idx: c.name for c in project.classes()}
        for im in images:
            print(_tag_line(project, im, names))
    return 0
