"""Project commands: ``init``, ``import``, ``status``, ``classes``, ``export``."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def _open(path: str):
    from annotations.store import Project

    return Project.open(path)


def cmd_init(args) -> int:
    from annotations.store import Project, check_new_project_classes

    classes = [c.strip() for c in args.classes.split(",")] if args.classes is not None else None  # '' is refused
    if classes is not None:
        check_new_project_classes(classes)
    p = Project.create(args.project, classes)
    print(f"created project {p.root} with classes: {', '.join(p.class_names)}")
    return 0


def cmd_import(args) -> int:
    from contextlib import nullcontext

    from annotations.errors import AnnotationError
    from annotations.importer import import_path
    from annotations.store import DB_NAME, Project, removed_on_failure

    # A project this command creates is removed again (with the folder, if it made that too)
    # when the import fails: a failed 'import --create' leaves nothing behind.
    creating = args.create and not (Path(args.project) / DB_NAME).is_file()
    with removed_on_failure(args.project) if creating else nullcontext():
        p = Project.open_or_create(args.project) if args.create else _open(args.project)
        try:
            if args.format in (None, "auto"):
                summary = import_path(p, args.path, _parse_options(args.option))
            else:
                from annotations.formats import import_dataset

                summary = import_dataset(p, args.format, args.path, **_parse_options(args.option))
            for line in summary.lines():
                print(line)
            if not summary.added and summary.skipped and not summary.duplicates:
                raise AnnotationError(f"nothing was imported from {args.path}: every file was skipped (listed above)"
                                      + ("; the new project was removed." if creating else "."))
        except BaseException:
            p.close()
            raise
    return 0


def _parse_options(items):
    from annotations.errors import AnnotationError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise AnnotationError(f"--option '{it}' must look like KEY=VALUE.")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_status(args) -> int:
    p = _open(args.project)
    c = p.counts()
    if args.json:
        print(json.dumps(c, indent=1))
        return 0
    print(f"project {p.root}")
    # Two kinds of count: images that have strokes / tags at all, and each image once, at the
    # furthest status it has reached (an image with strokes and a final mask counts as final).
    print(f"images: {c['images']}  with strokes: {c['scribbled_images']}  with tags: {c['tagged_images']}")
    print("by furthest status (each image once): " + ", ".join(f"{k} {v}" for k, v in c["status"].items()))
    print("current masks: " + ", ".join(f"{k} {v}" for k, v in c["masks"].items()))
    print(_named_count(p, "final masks with strokes drawn after them", p.finals_older_than_strokes(),
                       "an export corrects them where those strokes contradict them; review them and accept again "
                       "(python -m segmenter accept PROJECT --kind final)"))
    print(_named_count(p, "masks showing a class tagged absent", p.masks_showing_absent(),
                       "an export re-segments those pixels without the class; predict again, or review them and "
                       "accept again"))
    if c["missing_files"]:  # deleted, moved or damaged outside the tool: every command that reads them skips them
        print(p.files_note(p.missing_files(verify=True), "missing or damaged files:",
                           why="is gone from the project folder or can no longer be read"))
    if c["image_sets"]:
        print("image sets: " + ", ".join(f"{k} {v}" for k, v in c["image_sets"].items()))
    print("classes:")
    for ci in p.classes():
        t = c["classes"][ci.name]
        print(f"  {ci.idx:3d} {ci.name:<20s} {ci.hex}  tagged present {t['tagged_present']}, "
              f"absent {t['tagged_absent']}")
    return 0


def _named_count(p, what: str, ids: list[int], advice: str) -> str:
    """``what: N``, and with N > 0 the first ten image names and ``advice``."""
    line = f"{what}: {len(ids)}"
    if ids:
        names = [p.image_info(i).name for i in ids[:10]]
        line += f" ({', '.join(names)}{' …' if len(ids) > 10 else ''}): {advice}"
    return line


def cmd_classes(args) -> int:
    p = _open(args.project)
    if args.action == "add":
        c = p.add_class(args.name, args.color)
        print(f"added class {c.idx}: {c.name} {c.hex}")
    elif args.action == "rename":
        from segmenter.models import rename_project_class

        c = rename_project_class(p, _key(args.cls), args.new_name)
        print(f"class {c.idx} is now {c.name}")
    elif args.action == "recolor":
        c = p.recolor_class(_key(args.cls), args.color)
        print(f"class {c.idx} {c.name} is now {c.hex}")
    elif args.action == "delete":
        from annotations.errors import ClassInUseError
        from annotations.importer import name_list
        from segmenter.cli import UsageError

        models = p.models_for_classes()  # they no longer fit the project once a class is gone
        left = (f"; {len(models)} model(s) trained for these classes ({name_list(models, 5)}) cannot predict this "
                "project after it (train a new model)") if models else ""
        try:
            print(p.delete_class(_key(args.cls), force=args.force))
        except ClassInUseError as e:
            if not (e.class_name and e.uses):
                raise UsageError(f"{e}{left} Add --force to delete it anyway.") from None
            raise UsageError(f"class '{e.class_name}' is used by {e.uses}: add --force to delete it anyway"
                             + (f" ({e.effects}{left})." if e.effects else f"{left}.")) from None
        if models:
            print(f"note: {len(models)} model(s) trained for the classes before the deletion ({name_list(models, 5)}) "
                  "cannot predict this project any more: train a new model.")
    else:
        for c in p.classes():
            print(f"{c.idx:3d} {c.name:<20s} {c.hex}")
    return 0


def cmd_rename_image(args) -> int:
    p = _open(args.project)
    old = p.image_by_name(args.image) if not args.image.strip().isdigit() else p.image_info(int(args.image))
    info = p.rename_image(old.id, args.new_name)
    print(f"image {info.id} {old.name} is now {info.name}")
    return 0


def _key(s: str):
    return int(s) if s.strip().isdigit() else s


def cmd_export(args) -> int:
    from annotations.formats import export_project

    p = _open(args.project)
    out = args.out or _new_export_folder(p.exports_dir, f"{args.format}-{_stamp()}")
    try:
        res = export_project(p, args.format, out, masks=args.masks, **_parse_options(args.option))
    except BaseException:
        if not args.out:  # the folder reserved for it, still empty
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise
    for line in res.lines():
        print(line)
    return 0


def _new_export_folder(parent, name: str) -> str:
    """``parent/name`` (``name-2``, ``-3`` ... when taken: two exports in the same second), created
    empty at once so that another export started meanwhile takes the next name."""
    from annotations.errors import AnnotationError

    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise AnnotationError(f"{parent}: cannot create the exports folder ({e.strerror or e}).") from None
    for k in range(1, 1000):
        path = os.path.join(parent, name if k == 1 else f"{name}-{k}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise AnnotationError(f"{path}: cannot create the export folder ({e.strerror or e}).") from None
    raise AnnotationError(f"{parent}: too many exports named {name}; give --out.")


def _stamp() -> str:
    from datetime import datetime

    return datetime.now().strftime("%Y%m%d-%H%M%S")


#: the epilog of ``export`` and ``import``: stands for the list of formats, made only when help is shown
FORMATS_EPILOG = "<the formats and their options>"


class _FormatsHelp(argparse.HelpFormatter):
    """Help that lists the formats of :mod:`annotations.formats` (their registry, loaded only for
    ``--help``) in place of :data:`FORMATS_EPILOG`, keeping that list's own line breaks."""

    def add_text(self, text):
        if text == FORMATS_EPILOG:
            from annotations.formats import describe_formats

            text = describe_formats(max(40, self._width - self._current_indent))
        super().add_text(text)

    def _fill_text(self, text, width, indent):
        if "\n" in text:  # the formats list, already laid out
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def register(sub) -> None:
    p = sub.add_parser("init", help="create a project folder",
                       description="Create a new project folder with a class list.")
    p.add_argument("project", help="the project folder to create")
    p.add_argument("--classes", help="comma-separated class names (default: background,object)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", help="import images or a dataset into a project",
                       description="Import a folder of images, one image, a folder dataset (detected by its "
                                   "meta.json), or with --format another layout (listed below).",
                       epilog=FORMATS_EPILOG, formatter_class=_FormatsHelp)
    p.add_argument("project")
    p.add_argument("path", help="a folder of images, an image file, or a dataset")
    p.add_argument("--format", default=None, help="format name, listed below (default: detect a folder dataset "
                                                  "or images)")
    p.add_argument("--create", action="store_true", help="create the project if it does not exist")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="format option (repeatable)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="counts per status, mask kind and class",
                       description="Count the project's images: those with strokes and with tags, each image "
                                   "once by the furthest status it has reached (final > imported > predicted > "
                                   "pseudo > scribbled > tagged > untouched), current masks per kind, the final "
                                   "masks that strokes were drawn after (to review), images whose file is gone from "
                                   "the project folder, image sets, and the tags of each class.")
    p.add_argument("project")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("classes", help="list, add, rename, recolour or delete classes")
    p.add_argument("project")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    csub.add_parser("list", help="list the classes")
    a = csub.add_parser("add", help="add a class")
    a.add_argument("name")
    a.add_argument("--color", help="#rrggbb (default: picked)")
    a = csub.add_parser("rename", help="rename a class")
    a.add_argument("cls", help="class index or name")
    a.add_argument("new_name")
    a = csub.add_parser("recolor", help="change a class colour")
    a.add_argument("cls", help="class index or name")
    a.add_argument("color", help="#rrggbb")
    a = csub.add_parser("delete", help="delete a class (with annotations: needs --force)")
    a.add_argument("cls", help="class index or name")
    a.add_argument("--force", action="store_true", help="also erase its pixels and tags")
    p.set_defaults(func=cmd_classes)

    p = sub.add_parser("rename-image", help="rename an image of a project",
                       description="Give an image another name (e.g. when two names differ only in case, "
                                   "which exports refuse: they are one file on Windows and macOS).")
    p.add_argument("project")
    p.add_argument("image", help="the image's name or id")
    p.add_argument("new_name", help="the new name (the extension is kept when it has none)")
    p.set_defaults(func=cmd_rename_image)

    from annotations.formats import MASK_CHOICES

    p = sub.add_parser("export", help="export masks, images and weak labels",
                       description="Export the project in a format (python -m segmenter export P --format folder).",
                       epilog=FORMATS_EPILOG, formatter_class=_FormatsHelp)
    p.add_argument("project")
    p.add_argument("--format", required=True, help="format name (listed below)")
    p.add_argument("--masks", choices=MASK_CHOICES, default="best",
                   help="final: only final masks; best: final > imported > predicted > pseudo, else a pseudo-mask "
                        "of the image's strokes made at export (default)")
    p.add_argument("--out", help="output folder, or a .zip file (default: PROJECT/exports/<format>-<time>)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="format option (repeatable)")
    p.set_defaults(func=cmd_export)
