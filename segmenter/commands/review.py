"""Review from the command line: ``accept`` (masks become final) and ``remove-image``.

The app's "Accept as final" for many images at once, and the removal of an image added by
mistake; each command's help (below, :data:`ACCEPT_DOC`, :data:`REMOVE_DOC`) says what it does.
"""
from __future__ import annotations

import argparse
import os

from annotations.importer import name_list

ACCEPT_DOC = """``python -m segmenter accept PROJECT``: store images' current masks as their final masks.

What the app's "Accept as final" does, for many images at once: the chosen mask of each image
(``--kind``: ``predicted`` by default, ``pseudo``, ``imported``, or ``best``: the first of
imported > predicted > pseudo the image has) becomes its ``final`` mask, its source saying where
it came from (``cli:accept(predicted MODEL)``). A mask older than strokes drawn on the image since
is accepted as an export writes it: corrected by those strokes (never as stored, contradicting
them), and a mask showing a class the image was tagged absent since, re-segmented without it.
Images without such a mask are skipped and counted; so are images that have a final mask
already (kept, unless ``--replace-final``), and images whose file is gone from the project folder
or damaged (named, with the remedy: nobody can review those). ``--kind final`` accepts the final
masks themselves again, as an export writes them: what ``status`` asks of a final mask with
strokes drawn after it (a final mask nothing contradicts is left as it is).

    python -m segmenter accept myproj                                  # every image's prediction
    python -m segmenter accept myproj --images horse003.jpg 7 --kind pseudo
    python -m segmenter accept myproj --kind imported --replace-final --images a.png
    python -m segmenter accept myproj --kind final                     # final masks, corrected by newer strokes
"""

REMOVE_DOC = """``python -m segmenter remove-image PROJECT IMAGE [IMAGE ...]``: take images out of a project.

An image is named by its name (or the name it was added under, or its name without the
extension) or by its id, as the other commands take them; a name that fits two images (e.g. ``2``:
the image named ``2.png`` and the image with id 2) is refused, and nothing is removed. Its masks
(every version), strokes (every layer and version), tags and image-set places go with it
(:meth:`annotations.store.Project.delete_image`), all images in one transaction. Nothing is asked.
The files stay in the project folder (``images/``, ``masks/<id>/``, ``scribbles/<id>/``: the
folder only grows); ids are never reused.

    python -m segmenter remove-image myproj mask_dragged_in_by_mistake.png
    python -m segmenter remove-image myproj 23 24
"""


KINDS = ("predicted", "pseudo", "imported", "best", "final")
#: ``--kind best``: the stored kinds, best first (final is the target, never a choice)
BEST = ("imported", "predicted", "pseudo")


def _parser(sub, name: str, doc: str, help_: str):
    """A sub-command parser whose description is the first two paragraphs of ``doc`` (the first
    names the command) and whose epilog is its third (examples), laid out as written."""
    parts = doc.split("\n\n")
    p = sub.add_parser(name, help=help_, description=parts[0] + "\n\n" + parts[1],
                       epilog="examples:\n" + parts[2].rstrip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", metavar="PROJECT", help="project folder")
    return p


def register(sub) -> None:
    p = _parser(sub, "accept", ACCEPT_DOC, "store images' predicted (or pseudo / imported) masks as final")
    p.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                   help="image names or ids, a name first (default: every image)")
    p.add_argument("--kind", default="predicted", choices=KINDS,
                   help="the mask to accept (default: predicted); best = imported > predicted > pseudo; final = "
                        "the final mask again, corrected by strokes drawn after it")
    p.add_argument("--replace-final", action="store_true",
                   help="replace an image's final mask too (default: an image with a final mask is kept)")
    p.set_defaults(func=cmd_accept)
    p = _parser(sub, "remove-image", REMOVE_DOC, "remove images (with their masks, strokes and tags) from a project")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image names or ids")
    p.set_defaults(func=cmd_remove_image)


# ----------------------------------------------------------------------------- accept
def corrections(stored, chosen) -> list[str]:
    """What the export's correction did to the mask ``stored`` (``chosen``: as exported; its source
    carries the marks :func:`annotations.formats._common.correct_stale_mask` adds): ``"strokes"``
    (corrected by strokes drawn since) and / or ``"absent"`` (re-segmented without classes tagged
    absent since)."""
    added = chosen.source[len(stored.source):] if chosen.source.startswith(stored.source) else chosen.source
    out = []
    if "(strokes of" in added:
        out.append("strokes")
    if "tagged absent" in added:
        out.append("absent")
    return out if out or chosen.source == stored.source else ["strokes"]


def accept_source(stored, chosen) -> str:
    """The final mask's source: the accepted kind and the model (or method) that made it, and what
    corrected it at acceptance (``chosen``: as exported, ``stored``: as stored)."""
    what = stored.model_version or stored.source
    words = {"strokes": "corrected by newer strokes", "absent": "without classes tagged absent"}
    fixed = "".join(f", {words[k]}" for k in corrections(stored, chosen))
    return f"cli:accept({stored.kind} {what}{fixed})"


def cmd_accept(args) -> int:
    import numpy as np

    from annotations.errors import ImageError
    from annotations.importer import mask_as_exported
    from annotations.store import Project

    from ._layers import resolve_image

    project = Project.open(args.project)
    if args.images:
        infos = {}
        for key in args.images:  # every name checked before anything is stored
            info = project.image_info(resolve_image(project, key))
            infos.setdefault(info.id, info)
        images = list(infos.values())
    else:
        images = project.images()
    kinds = BEST if args.kind == "best" else (args.kind,)
    what = "imported, predicted or pseudo" if args.kind == "best" else args.kind
    again = args.kind == "final"  # the final masks themselves, as an export writes them
    accepted, corrected, missing, had_final, left_out, unreadable = [], [], [], [], [], []
    untagged = []
    stale = set(project.finals_older_than_strokes()) if again else set()
    # an image nobody can look at any more is not reviewed: left out, named (as pseudo, predict, train do)
    gone = {im.id for im in project.missing_files([i.id for i in images], verify=True)}
    # one image at a time: a correction by strokes takes a moment, the project stays writable meanwhile
    for info in images:
        if info.id in gone:
            unreadable.append(info)
            continue
        stored = next((mi for mi in (project.mask_info(info.id, k) for k in kinds) if mi is not None), None)
        if stored is None:
            missing.append(info)
            continue
        final = project.mask_info(info.id, "final")
        if final is not None and not args.replace_final and not again:
            had_final.append(info.name)
            continue
        try:
            got = mask_as_exported(project, info, stored.kind)
        except ImageError:  # a stale mask is corrected on its image: its file is missing or damaged
            unreadable.append(info)
            continue
        if got is None:  # a stale mask that cannot be corrected here: never accepted as stored
            left_out.append(info.name)
            continue
        mask, chosen = got
        if final is not None and np.array_equal(project.mask(info.id, "final"), mask):
            if not (again and info.id in stale):
                had_final.append(info.name)  # the same mask: nothing to replace
                continue
            # reviewed: strokes drawn after it agree with it; stored again, so status stops asking
        fixed = chosen.source != stored.source
        project.save_mask(info.id, mask, "final", source=accept_source(stored, chosen),
                          model_version=stored.model_version,
                          confidence=None if fixed else project.confidence(info.id, stored.kind))
        accepted.append(info.name)
        how = corrections(stored, chosen) if fixed else []
        if "strokes" in how:
            corrected.append(info.name)
        if "absent" in how:
            untagged.append(info.name)
    print(f"accepted {len(accepted)} {what} mask(s) as final" + (f": {name_list(accepted)}" if accepted else ""))
    if corrected:
        print(f"note: {len(corrected)} of them were older than strokes drawn since and were accepted corrected by "
              f"those strokes (as an export writes them): {name_list(corrected)}")
    if untagged:
        print(f"note: {len(untagged)} of them showed a class the image was tagged absent since and were accepted "
              f"re-segmented without it (as an export writes them): {name_list(untagged)}")
    if had_final:
        print(f"skipped {len(had_final)} image(s) that have a final mask already ("
              + ("nothing contradicts it" if again else "the same mask" if args.replace_final
                 else "kept; --replace-final replaces it, --kind final accepts it again corrected by newer strokes")
              + f"): {name_list(had_final)}")
    if missing:
        article = "an" if what[0] in "aeiou" else "a"
        print(f"skipped {len(missing)} image(s) without {article} {what} mask"
              + (f": {name_list([i.name for i in missing])}" if args.images else ""))
        drawn = [i for i in missing if project.stroke_layer(i.id) is not None]  # with strokes
        if drawn and args.kind in ("pseudo", "best"):
            print(f"note: {len(drawn)} of them have strokes but no stored mask: python -m segmenter pseudo PROJECT "
                  "stores their pseudo-masks (then accept them)")
    if left_out:
        print(f"skipped {len(left_out)} image(s) whose {what} mask is older than their strokes and could not be "
              f"corrected by them here: {name_list(left_out)}")
    if unreadable:
        print(project.files_note(unreadable, "skipped", why="is gone from the project folder or can no longer be "
                                                              "read (its mask is not accepted unseen)"))
    return 0


# ----------------------------------------------------------------------------- remove-image
def name_matches(project, key: str) -> list:
    """The images ``key`` names, as :meth:`Project.image_by_name` looks (the name, the name as
    stored, the name the image was added under, then the name without extension), all of them
    at the first kind of match that finds any (more than one: the name is ambiguous)."""
    from annotations.store import sanitize_name

    images = project.images()
    safe = sanitize_name(key)
    stems = {os.path.splitext(os.path.basename(key))[0], os.path.splitext(safe)[0]}
    for test in (lambda i: i.name == key, lambda i: i.name == safe, lambda i: i.orig_name == key,
                 lambda i: os.path.splitext(i.name)[0] in stems):
        found = [i for i in images if test(i)]
        if found:
            return found
    return []


def resolve_unambiguous(project, key: str):
    """The one image ``key`` names (see :func:`name_matches`, then an id); a
    :class:`~segmenter.cli.UsageError` when it names none or more than one."""
    from annotations.errors import NotFoundError
    from segmenter.cli import UsageError

    key = key.strip()
    found = name_matches(project, key)
    if key.isdigit():
        try:
            by_id = project.image_info(int(key))
        except NotFoundError:
            by_id = None
        if by_id is not None and all(i.id != by_id.id for i in found):
            found.append(by_id)
    if not found:
        raise NotFoundError(f"no image named '{key}' in this project" + (" and no image with that id."
                                                                          if key.isdigit() else "."))
    if len(found) > 1:
        what = ", ".join(f"{i.name} (id {i.id})" for i in found)
        raise UsageError(f"'{key}' is ambiguous: it names {what}; nothing was removed. Give the full name (with "
                         "its extension) of the one to remove.")
    return found[0]


def what_goes(project, info) -> str:
    """What :meth:`Project.delete_image` takes with the image, in words."""
    parts = []
    history = project.mask_history(info.id)
    if history:
        current = [k for k in ("final", "imported", "predicted", "pseudo") if project.mask_info(info.id, k)]
        parts.append(f"{len(history)} mask version(s)" + (f" (current: {', '.join(current)})" if current else ""))
    layers = project.scribble_layers(info.id)
    if layers:
        parts.append(f"strokes in layer(s) {', '.join(layers)}")
    tags = project.tags(info.id)
    if tags:
        parts.append(f"{len(tags)} tag(s)")
    sets = [s for s in project.image_sets() if info.id in project.image_set(s)]
    if sets:
        parts.append(f"its place in image set(s) {', '.join(sets)}")
    return ", ".join(parts) if parts else "no labels"


def cmd_remove_image(args) -> int:
    from annotations.store import Project

    project = Project.open(args.project)
    chosen = {}
    for key in args.images:  # every name checked before anything is removed
        info = resolve_unambiguous(project, key)
        chosen.setdefault(info.id, info)
    lines = [f"removed image {info.id} {info.name} with {what_goes(project, info)}" for info in chosen.values()]
    with project.transaction():
        for info in chosen.values():
            project.delete_image(info.id)
    for line in lines:
        print(line)
    left = len(project.image_ids())
    print(f"{len(chosen)} image(s) removed, {left} left; their files stay in the project folder "
          "(images/, masks/<id>/, scribbles/<id>/).")
    return 0
