"""Export and import formats, selectable by name from one registry.

``list_formats()`` names them; ``get_format(name)`` returns one or raises with the known names.
Each format is a :class:`Format` with ``export(project, out_dir, options)`` and, where it can,
``import_into(project, path, options)``. Exports are written to a temporary folder beside the
destination and renamed into place at the end (:func:`atomic_output_dir`), so a failure leaves
nothing half-written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import AnnotationError
from ..imageio import mkdtemp_umask

MASK_CHOICES = ("final", "best")
#: "best available": the first of these kinds an image has.
BEST_ORDER = ("final", "imported", "predicted", "pseudo")


@dataclass
class ExportOptions:
    """``masks``: ``final`` (only final masks) or ``best`` (final > imported > predicted > pseudo,
    else a pseudo-mask made from the image's strokes at export).
    ``image_ids``: restrict to these images (``None`` = all)."""

    masks: str = "best"
    image_ids: list[int] | None = None
    extra: dict = field(default_factory=dict)
    #: The stored kinds to choose from, in order, instead of those of ``masks`` (``()``: those).
    only_kinds: tuple[str, ...] = ()
    #: Filled by the export (:func:`._common.export_mask`): names of the images whose predicted mask
    #: was corrected by strokes drawn after the prediction, and of those left without a mask
    #: because it could not be corrected here.
    corrected: list[str] = field(default_factory=list)
    stale_left_out: list[str] = field(default_factory=list)
    #: ... whose final mask was corrected by strokes drawn after it was accepted,
    corrected_final: list[str] = field(default_factory=list)
    #: ... whose pseudo-mask was corrected by strokes drawn after it was made,
    corrected_pseudo: list[str] = field(default_factory=list)
    #: ... that got a pseudo-mask made from their strokes at export (``best``: strokes, no stored mask),
    pseudo_at_export: list[str] = field(default_factory=list)
    #: ... that have strokes but no final mask (``final``: left without a mask),
    strokes_without_final: list[str] = field(default_factory=list)
    #: ... whose stored mask showed a class the image is tagged absent (re-segmented without it),
    corrected_absent: list[str] = field(default_factory=list)
    #: ... left without a mask because it had to be made or corrected on the image, whose file is
    #: missing or unreadable (an export that writes no image files goes on without them),
    file_left_out: list[str] = field(default_factory=list)
    #: set by a format that leaves images without a mask out of the export (COCO, YOLO),
    maskless_left_out: bool = False
    #: and ``{image id: kind}`` of every mask chosen (for the breakdown of :class:`ExportResult`);
    #: the pseudo-labelling method of the masks made at export.
    chosen: dict[int, str] = field(default_factory=dict)
    pseudo_method: str = ""

    def __post_init__(self):
        if self.masks not in MASK_CHOICES:
            raise AnnotationError(f"--masks must be one of {', '.join(MASK_CHOICES)}, not '{self.masks}'.")

    @property
    def kinds(self) -> tuple[str, ...]:
        if self.only_kinds:
            return tuple(self.only_kinds)
        return ("final",) if self.masks == "final" else BEST_ORDER


@dataclass
class ExportResult:
    """What an export wrote. ``mask_kinds``: ``{kind: count}`` of the ``masks`` written (filled by
    :func:`export_project`; empty when unknown), so the summary says which kinds went out."""

    path: Path
    images: int = 0
    masks: int = 0
    scribbles: int = 0
    notes: list[str] = field(default_factory=list)
    mask_kinds: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        kinds = ""
        if self.masks and self.mask_kinds:
            order = list(BEST_ORDER) + sorted(set(self.mask_kinds) - set(BEST_ORDER))
            kinds = " (" + ", ".join(f"{self.mask_kinds[k]} {k}" for k in order if self.mask_kinds.get(k)) + ")"
        return [f"exported {self.images} image(s), {self.masks} mask(s){kinds}, {self.scribbles} scribble map(s) "
                f"to {self.path}"] + self.notes


class Format(ABC):
    name: str = ""
    description: str = ""
    can_import: bool = False
    #: whether the export writes the image files (``images=none`` turns that off where offered):
    #: an export that does not goes on when image files are missing (:func:`export_project`)
    carries_images: bool = True
    #: ``--option`` keys of an export / an import, each with a line of help (listed by ``--help``)
    export_options: dict[str, str] = {}
    import_options: dict[str, str] = {}

    @abstractmethod
    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        """Write the project into ``out_dir`` (an empty temporary folder)."""

    def import_into(self, project, path: Path, options: dict | None = None):
        raise AnnotationError(f"format '{self.name}' can be exported but not imported.")


_REGISTRY: dict[str, Format] = {}


def register_format(cls):
    inst = cls()
    _REGISTRY[inst.name] = inst
    return cls


def _load_builtin() -> None:
    """Import every format module once; each registers itself."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def list_formats() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_format(name: str) -> Format:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AnnotationError(f"unknown format '{name}' (known: {', '.join(sorted(_REGISTRY))}).") from None


def describe_formats(width: int = 100) -> str:
    """The formats of the registry, each with its description and its export and import options,
    as text for ``export --help`` and ``import --help`` (lines at most ``width`` wide)."""
    import textwrap

    _load_builtin()
    out = ["formats (--format NAME) and their options (--option KEY=VALUE):"]
    for name in sorted(_REGISTRY):
        fmt = _REGISTRY[name]
        out += textwrap.wrap(f"{name}: {fmt.description}", width, initial_indent="  ", subsequent_indent="      ")
        sides = [("export", fmt.export_options)] + ([("import", fmt.import_options)] if fmt.can_import else [])
        for side, options in sides:
            if not options:
                out.append(f"    {side} options: none")
                continue
            out.append(f"    {side} options:")
            key_w = max(len(k) for k in options)
            for key, help_ in options.items():
                out += textwrap.wrap(f"{key:<{key_w}}  {help_}", width, initial_indent="      ",
                                     subsequent_indent=" " * (8 + key_w))
        if not fmt.can_import:
            out.append("    (export only)")
    return "\n".join(out)


def _make_folder(folder: Path) -> None:
    """``folder`` and its parents; one that cannot be made (a file in the way, no permission) is an
    :class:`AnnotationError` naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((f for f in (folder, *folder.parents) if f.exists() and not f.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else e.strerror or str(e)
        raise AnnotationError(f"{folder}: cannot create the output folder ({why}).") from None


@contextmanager
def atomic_output_dir(dest: Path) -> Iterator[Path]:
    """Yield an empty temp folder; on success it replaces ``dest`` (which must not hold other data)."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AnnotationError(f"{dest}: already exists and is not empty; choose a new output folder.")
    _make_folder(dest.parent)
    # the folder renamed into place: the mode of any new folder, not mkdtemp's 0700
    tmp = mkdtemp_umask(dest.parent, prefix=f".{dest.name}.")
    try:
        yield tmp
        try:
            if dest.exists():
                dest.rmdir()
            os.replace(tmp, dest)
        except OSError:  # another export wrote there meanwhile
            raise AnnotationError(f"{dest}: another export was written there meanwhile; choose a new output "
                                  "folder.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_project(project, format_name: str, out: str | os.PathLike, masks: str = "best",
                   image_ids: list[int] | None = None, **extra) -> ExportResult:
    """Export to a folder, or to a zip when ``out`` ends with ``.zip``. Atomic either way."""
    fmt = get_format(format_name)
    options = ExportOptions(masks=masks, image_ids=image_ids, extra=extra)
    out = Path(out)
    if fmt.carries_images and str(extra.get("images", "")).lower() != "none":
        check_image_files(project, image_ids)
    if out.suffix.lower() == ".zip":
        if out.exists():
            raise AnnotationError(f"{out}: already exists; choose a new file name.")
        _make_folder(out.parent)
        with tempfile.TemporaryDirectory(dir=str(out.parent), prefix=".export.") as td:
            res = fmt.export(project, Path(td), options)
            tmp_zip = Path(td) / "out.zip.tmp"
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(Path(td).rglob("*")):
                    if f.is_file() and f != tmp_zip:
                        zf.write(f, f.relative_to(td).as_posix())
            os.replace(tmp_zip, out)
        res.path = out
        return _stale_notes(res, options)
    with atomic_output_dir(out) as tmp:
        res = fmt.export(project, tmp, options)
    res.path = out
    return _stale_notes(res, options)


def _stale_notes(res: ExportResult, options: ExportOptions) -> ExportResult:
    """The breakdown of the masks by kind, and one note each (with the count of images) for the
    masks corrected by newer strokes, those left out, the pseudo-masks made at export and
    (``final``) the images with strokes but no final mask."""
    kinds: dict[str, int] = {}
    for k in options.chosen.values():
        kinds[k] = kinds.get(k, 0) + 1
    if sum(kinds.values()) == res.masks and not res.mask_kinds:
        res.mask_kinds = kinds
    notes = [
        (options.corrected_final, "final mask(s) contradicted strokes drawn after they were accepted; exported "
         "corrected by those strokes (python -m segmenter status counts the final masks older than strokes: review "
         "them and accept again to store what you want)"),
        (options.corrected, "predicted mask(s) contradicted strokes drawn after the prediction; exported corrected "
         "by those strokes (to store the corrected masks in the project too, run python -m segmenter predict "
         "PROJECT again)"),
        (options.corrected_pseudo, "pseudo-mask(s) contradicted strokes drawn after they were made; exported "
         "corrected by those strokes (to store them, run python -m segmenter pseudo PROJECT again)"),
        (options.stale_left_out, "image(s) left without a mask: their mask is older than strokes drawn since, or "
         "they have strokes only, and it could not be made here (the segmenter cannot be imported); run "
         "python -m segmenter predict PROJECT or pseudo PROJECT"),
        (options.pseudo_at_export, "image(s) have strokes but no stored mask; exported with a pseudo-mask made from "
         f"their strokes at export ({options.pseudo_method}, kind 'pseudo' in manifest.json; python -m segmenter "
         "pseudo PROJECT stores them, Accept in the app makes one final)"),
        (options.strokes_without_final, "image(s) have strokes but no final mask; "
         + ("left out" if options.maskless_left_out else "exported without a mask")
         + " (accept them in the app, or export --masks best for a mask made from the strokes)"),
        (options.file_left_out, "image(s) left without a mask: it had to be made or corrected from their strokes "
         "or tags, which needs the image, and the image file is missing or unreadable (python -m segmenter status "
         "names them; put the files back, or remove them with python -m segmenter remove-image)"),
        (options.corrected_absent, "mask(s) showed a class the image is tagged absent (tagged after the mask was "
         "made); exported with those pixels re-segmented without that class (kind kept, source marked in "
         "manifest.json; python -m segmenter status counts them: predict again, or review and accept again)"),
    ]
    res.notes += [f"note: {len(set(names))} {text}" for names, text in notes if names]
    if options.masks == "final" and res.masks == 0 and not options.strokes_without_final:
        res.notes.append("note: no image has a final mask, so no mask was exported (accept masks in the app or with "
                         "python -m segmenter accept PROJECT, or export --masks best for the current ones)")
    return res


def check_image_files(project, image_ids: list[int] | None = None) -> None:
    """Refuse to export when image files of the project are gone from its ``images/`` folder
    (deleted or moved outside the tool) or damaged (:meth:`Project.file_usable`): an
    :class:`AnnotationError` naming them, before anything is written."""
    gone = project.missing_files(image_ids, verify=True)
    if gone:
        names = ", ".join(f"{im.name} ({im.file})" for im in gone[:5]) + (" …" if len(gone) > 5 else "")
        damaged = sum((project.root / im.file).is_file() for im in gone)
        where = ("missing from its folder" if not damaged else "damaged" if damaged == len(gone)
                 else "missing from its folder or damaged")
        raise AnnotationError(f"{len(gone)} image file(s) of this project are {where}: {names}. "
                              f"Nothing was exported. {project.file_remedy(gone)}; then export again.")


def import_dataset(project, format_name: str, path: str | os.PathLike, **options):
    fmt = get_format(format_name)
    p = Path(path)
    if not p.exists():
        raise AnnotationError(f"{p}: no such file or folder.")
    if not fmt.can_import:
        importable = ", ".join(n for n in list_formats() if _REGISTRY[n].can_import)
        raise AnnotationError(f"format '{fmt.name}' can be exported but not imported (importable: {importable}).")
    return fmt.import_into(project, p, options)
