"""Importing into a project: a plain folder of images, or a dataset in the folder layout.

:func:`import_path` detects which (a ``.zip`` is read like the folder it holds): a folder with
``meta.json`` is a folder dataset (classes and their ``colors`` from meta.json, masks as kind
``imported``, every scribble set as a scribble layer of that name, splits as image sets, tags from
``tags.json``); anything else is a folder (searched recursively) or a single image file. A bad
file is listed in the summary with the reason and skipped; it never aborts the import.
A ``.nii`` / ``.nii.gz`` file, or a folder holding such volumes and no images, is imported by the
``nifti`` format (:mod:`annotations.formats.nifti`: its slices as images), and so is a nifti export
(a folder or ``.zip`` whose ``manifest.json`` says ``nifti``: its label volumes back onto the
slices). Any other export of this tool (a folder or ``.zip`` whose ``manifest.json`` names its
format: png, voc, coco, ...) is read as that format, as with ``--format``.

A dataset image that the project already holds (same name and same picture, e.g. a folder export
imported back after its masks were edited elsewhere) is not added again, but its masks,
scribbles and tags are stored on the project's image (one summary line counts these images). A
dataset image with the name of a project image that shows another picture is added as a new image
(a unique name such as ``a_2.png``), with a note. Labels onto an image the project holds never
undo work done there since: a scribble map equal to the current one is skipped; strokes and tags
that differ from the dataset's are kept (one note counts them; options ``scribbles=replace``,
``tags=replace`` take the dataset's); see :class:`annotations.formats._common.LabelMerge`.

Masks onto an image the project holds (no ``kind`` option), see :class:`MaskRule`: with the
``manifest.json`` of this tool's exports, a mask equal to one the project holds for the image (any
kind) is skipped, as is one equal to what the export wrote; one that differs from what was
exported (edited elsewhere) becomes the image's ``final`` mask (unless the project's own final
mask is newer than the export: then it is stored as ``imported`` behind it, with a note); a mask
the manifest names but this project never held keeps the kind it records. Without a manifest
masks are stored as ``imported`` (skipped when equal to the current imported one), and a note
says when they are hidden behind a final mask. An image the import adds gets ``imported`` masks;
``--option kind=KIND`` (or ``manifest``) sets the kind for every mask.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import imageio
from .errors import AnnotationError, DuplicateImageError
from .folder import FolderDataset
from .formats._common import JUNK_DIRS, LabelMerge, _has_annotations, dataset_root, same_picture
from .store import DB_NAME, DEFAULT_CLASSES, ImportSummary, Project, parse_color, sanitize_name

#: Images imported per transaction.
BATCH = 64


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in JUNK_DIRS)
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in imageio.IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / f)
    return out


def is_folder_dataset(path: str | os.PathLike) -> bool:
    return (Path(path) / "meta.json").is_file()


def import_path(project: Project, path: str | os.PathLike, options: dict | None = None) -> ImportSummary:
    """Import a folder dataset, a folder of images or one image file (detected); a ``.zip`` of
    either is read like the folder it holds. ``options``: those of the ``folder`` format (checked:
    an unknown key is an error) for a folder dataset; images take none."""
    p = Path(path)
    if not p.exists():
        raise AnnotationError(f"{p}: no such file or folder.")
    if p.is_file() and p.suffix.lower() == ".zip":
        with dataset_root(p) as root:
            return _import_folder(project, root, p, options)
    if p.is_dir():
        return _import_folder(project, p, p, options)
    if (nifti := _nifti(p)) is not None:
        return nifti.import_into(project, p, options)
    _no_options(options, p)
    return project.import_images([p])


def _nifti(path: Path):
    """The nifti format when ``path`` is a ``.nii`` / ``.nii.gz`` file, a folder holding some, or a
    nifti export (``manifest.json`` says ``nifti``; its volumes are in ``labels/``)."""
    from .formats import get_format
    from .formats.nifti import is_nifti_path

    return get_format("nifti") if is_nifti_path(path) else None


def _no_options(options: dict | None, where: Path) -> None:
    if options:
        key = sorted(options)[0]
        raise AnnotationError(f"{where}: --option {key} does not apply: this is a folder of images or an image, not "
                              "a dataset (options apply to a folder dataset with meta.json, or with --format NAME).")


def _import_folder(project: Project, root: Path, where: Path, options: dict | None = None) -> ImportSummary:
    if (root / DB_NAME).is_file():  # its mask, confidence and stroke PNGs would become images
        same = Path(root).resolve() == Path(project.root).resolve()
        raise AnnotationError(
            f"{where} is {'this' if same else 'a'} project's folder, not a folder of images: its masks and strokes "
            "would be added as images; nothing was added." + ("" if same else (
                f" Export that project (python -m segmenter export {where} --format folder) and import the "
                "export: its images come with their masks, strokes and tags.")))
    if is_folder_dataset(root):
        from .formats import get_format

        return get_format("folder").import_into(project, root, options)  # checks the options
    files = find_images(root)
    if not files and (nifti := _nifti(root)) is not None:
        return nifti.import_into(project, root, options)
    if (fmt := _manifest_format(root)) is not None:
        # an export of this tool in another format (png, voc, coco, ...): read as that format, not
        # as a folder of images (its mask and colour PNGs would become images)
        from .formats import get_format

        try:
            summary = get_format(fmt).import_into(project, root, options)
        except AnnotationError as e:
            raise AnnotationError(f"{where} was read as a '{fmt}' export (its manifest.json says so): {e}") from None
        summary.notes.insert(0, f"read as a '{fmt}' export (its manifest.json says so; --format {fmt}).")
        return summary
    _no_options(options, where)
    if not files:
        raise AnnotationError(f"{where}: no image files found (looked for {', '.join(imageio.IMAGE_EXTENSIONS)}).")
    return project.import_images(files)


def _manifest_format(root: Path) -> str | None:
    """The importable format ``root/manifest.json`` records (an export of this tool), or ``None``."""
    from .formats import list_formats

    try:
        m = json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    fmt = m.get("format") if isinstance(m, dict) else None
    return fmt if isinstance(fmt, str) and fmt in list_formats() and fmt != "folder" else None


def import_folder_dataset(project: Project, root: str | os.PathLike, kind: str | None = None,
                          merge: LabelMerge | None = None) -> ImportSummary:
    """Import a dataset in the folder layout; see the module docstring.

    ``kind``: the mask kind to store for every mask, or ``manifest`` to restore the kinds that an
    export recorded in ``manifest.json`` (masks it does not list stay ``imported``); ``None`` (the
    default): ``imported`` on images the import adds, :class:`MaskRule` on images the project holds.
    ``merge``: how labels go onto images the project holds (default: keep the project's strokes
    and tags where they differ from the dataset's; see :class:`LabelMerge`).
    """
    t0 = time.perf_counter()
    merge = LabelMerge() if merge is None else merge
    ds = FolderDataset.open(root)
    manifest, manifest_error = _read_manifest(ds)
    kinds = _mask_kinds(ds, "imported" if kind is None else kind, manifest, manifest_error)
    rule = MaskRule(ds.name, kinds, explicit=kind is not None,
                    manifest=manifest if (ds.root / "manifest.json").is_file() and not manifest_error else None)
    summary = ImportSummary(skipped=list(ds.skipped))
    if manifest_error:
        summary.notes.append(f"note: manifest.json cannot be read ({manifest_error}); scribble layers are named "
                             "after their folders")
    colors = _meta_colors(ds, summary.notes)
    if isinstance(manifest.get("exported"), str):
        merge.exported = manifest["exported"]
    if project.class_names != ds.classes or not _has_annotations(project):
        # Names and colours, as the other formats' importers do (a project without annotations only).
        before = project.class_names
        if before and before != ds.classes and tuple(before) != DEFAULT_CLASSES:  # not the placeholder
            summary.notes.append(f"note: the project's classes ({', '.join(before)}) were replaced by the dataset's "
                                 f"({', '.join(ds.classes)}): the project had no annotations yet. To keep them, "
                                 "import into another project.")
        with project.transaction():
            project.set_classes(ds.classes)
            for c in project.classes():
                if colors[c.idx] is not None and colors[c.idx] != tuple(c.color):
                    project.recolor_class(c.idx, colors[c.idx])
    sets = ds.scribble_sets()
    layer_names = manifest.get("layers") if isinstance(manifest.get("layers"), dict) else {}
    tags = _read_tags(ds, summary)
    # The project's images by stem (name matches are checked by content, see _import_one).
    by_stem: dict[str, object] = {}
    for im in project.images():
        by_stem.setdefault(im.stem, im)
    id_map: dict[str, int] = {}
    items = list(ds.image_paths.items())
    for start in range(0, len(items), BATCH):
        # One transaction per batch: far fewer commits (fsyncs); a bad file still only skips itself.
        with project.transaction(bulk=True):
            for sid, path in items[start : start + BATCH]:
                _import_one(project, ds, sid, path, sets, summary, id_map, rule, by_stem, layer_names,
                            tags.get(sid, {}), merge)
    summary.notes.extend(rule.notes())
    if merge.tags_set:
        summary.notes.append(f"note: {merge.tags_set} image-level tag(s) set from tags.json")
    summary.notes.extend(merge.notes())
    for split in ds.splits():
        ids = [id_map[i] for i in ds.split(split) if i in id_map]
        if ids:
            project.add_to_set(split, ids)
    summary.seconds = time.perf_counter() - t0
    return summary


def mask_as_exported(project, info, kinds: tuple[str, ...] | str | None = None):
    """``(mask, MaskInfo)`` of the image ``info`` as an export writes it
    (:func:`annotations.formats._common.export_mask`: a stored mask older than strokes drawn since
    is corrected by them, its source saying so), or ``None`` (no such mask, or a stale one that
    cannot be corrected here). ``kinds``: the stored kinds to choose from, in order (then no mask
    is made at export); ``None``: what ``export --masks best`` writes. :class:`ImageError` when the
    image is needed and its file is missing or unreadable."""
    from .formats import ExportOptions
    from .formats._common import export_mask

    if kinds is None:
        return export_mask(project, info, ExportOptions(), raise_unreadable=True)
    chosen = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    # masks="final": an export makes no mask of an image without one
    return export_mask(project, info, ExportOptions(masks="final", only_kinds=chosen), raise_unreadable=True)


def _pseudo_as_exported(project, info, entry: dict, exported: str | None):
    """The pseudo-mask an export made from the strokes of the image ``info`` as they were when it
    was written (``exported``, manifest.json's time; the layer from the recorded source
    ``...(strokes of 'LAYER' at export)``), or ``None``: strokes changed or undone since would make
    another one now, and what was exported must not count as an edit made elsewhere."""
    import re

    from .formats._common import pseudo_from_strokes

    m = re.search(r"strokes of '(.*)' at export\)$", str(entry.get("source") or ""))
    if not isinstance(exported, str) or m is None or entry.get("kind") != "pseudo":
        return None
    then = project.scribbles_at(info.id, exported, m.group(1))
    if then is None:
        return None
    try:
        got = pseudo_from_strokes(project, info.id, m.group(1), scribbles=then)
    except (ImportError, AnnotationError):
        return None
    return None if got is None else got[0]


def _same(a, b) -> bool:
    return a is not None and np.shape(a) == np.shape(b) and np.array_equal(a, b)


class MaskRule:
    """How a folder dataset's masks are stored (see the module docstring).

    ``kinds``: ``stem -> kind`` of the ``kind`` option (:func:`_mask_kinds`), used for every mask
    when ``explicit`` (the option was given), on images the import adds, and on images the project
    holds when there is no ``manifest`` (the dataset's manifest.json, or ``None``). Otherwise a
    mask onto an image the project holds is compared with the project's current masks and with
    the version the manifest says was exported (kind and ``created``): equal to either, it is
    skipped; else it was edited (or made) elsewhere and becomes the image's ``final`` mask, unless
    the project's final mask is newer than the export (then ``imported``, behind it). A mask the
    manifest names but this project never held (another project's export) keeps the recorded kind.
    """

    def __init__(self, ds_name: str, kinds, explicit: bool, manifest: dict | None, keep_recorded_kind: bool = True):
        self.source = f"import:{ds_name}"
        #: a mask of another project's export keeps the kind its manifest records (the folder
        #: format); else it is stored as ``kinds(sid)`` says, as a mask without a manifest is
        self.keep_recorded_kind = keep_recorded_kind
        self.kinds = kinds
        self.explicit = explicit
        recorded = (manifest or {}).get("masks")
        self.recorded = None if manifest is None else (recorded if isinstance(recorded, dict) else {})
        self.edited: list[str] = []        # image names whose edited mask became the final one
        self.unchanged = 0                 # masks equal to the project's or to what was exported
        self.recorded_kinds: dict[str, int] = {}  # masks the project never held, by the kind recorded
        self.newer_final: list[str] = []   # edits stored as imported: the project's final is newer
        self.behind_final: list[str] = []  # other imported masks hidden behind a final mask

    def store(self, project, merge: LabelMerge, info, sid: str, mask, held: bool) -> bool:
        """Store the dataset's mask of stem ``sid`` on the project image ``info`` (``held``: the
        project had it before this import); whether a mask was stored."""
        from .formats._common import read_mask_file
        from .schema import MASK_KINDS

        if self.explicit or not held or self.recorded is None:
            kind = self.kinds(sid)
            stored = merge.mask(project, info.id, mask, kind, self.source)
            if stored and kind == "imported" and held and project.mask_info(info.id, "final") is not None:
                self.behind_final.append(info.name)
            return stored
        current = {k: project.mask_info(info.id, k) for k in MASK_KINDS}
        if any(mi is not None and _same(read_mask_file(project.root / mi.file), mask) for mi in current.values()):
            self.unchanged += 1
            return False
        entry = self.recorded.get(sid)
        entry = entry if isinstance(entry, dict) and entry.get("kind") in MASK_KINDS else None
        exported = None  # the project's mask version the export wrote (its kind and time)
        at_export = False  # the export corrected it by newer strokes, or made it from strokes
        if entry is not None:
            exported = next((mi for mi in reversed(project.mask_history(info.id, entry["kind"]))
                             if mi.created == entry.get("created")), None)
            at_export = str(entry.get("source") or "").endswith("at export)")
            if exported is not None and _same(read_mask_file(project.root / exported.file), mask):
                self.unchanged += 1  # an older version, unchanged: the project's newer one stays
                return False
            if at_export:
                got = mask_as_exported(project, info)
                if got is not None and _same(got[0], mask):
                    self.unchanged += 1
                    return False
                then = _pseudo_as_exported(project, info, entry, merge.exported)
                if then is not None and _same(then, mask):  # strokes changed (undone) since: what was written
                    self.unchanged += 1
                    return False
                if got is None and exported is None and not self.keep_recorded_kind:
                    # made at export from strokes this project does not hold: another project's
                    return merge.mask(project, info.id, mask, self.kinds(sid), self.source)
        if entry is not None and exported is None and not at_export:
            if not self.keep_recorded_kind:
                return merge.mask(project, info.id, mask, self.kinds(sid), self.source)
            kind, source = entry["kind"], f"{self.source}({entry['kind']} of another project)"
            recorded = True
        else:  # differs from what was exported (or nothing was): a person's edit
            kind, recorded = "final", False
            source = f"{self.source}(edited {entry['kind']})" if entry is not None else \
                f"{self.source}(not in the export)"
        final = current["final"]
        since = exported.created if exported is not None else (entry or {}).get("created")
        if kind == "final" and final is not None and (exported is None or final.id != exported.id) \
                and (not isinstance(since, str) or final.created > since):
            # the project's final mask was made after the export (or apart from it): it stays
            project.save_mask(info.id, mask, "imported", source=source)
            self.newer_final.append(info.name)
            return True
        project.save_mask(info.id, mask, kind, source=source)
        if not recorded:
            self.edited.append(info.name)
        else:  # another project's mask, of the kind it records (a final one too: no edit of anybody's)
            self.recorded_kinds[kind] = self.recorded_kinds.get(kind, 0) + 1
            if kind == "imported" and final is not None:
                self.behind_final.append(info.name)
        return True

    def notes(self) -> list[str]:
        out = []
        if self.recorded is not None and not self.explicit and (self.edited or self.unchanged):
            parts = []
            n = len(self.edited)
            if n:
                parts.append(f"{n} mask{'s differ' if n != 1 else ' differs'} from what was exported (edited "
                             f"elsewhere) and became {'their' if n != 1 else 'its'} image's final mask "
                             f"({name_list(self.edited)})")
            if self.unchanged:
                parts.append(f"{self.unchanged} unchanged mask{'s' if self.unchanged != 1 else ''} skipped")
            out.append("note: masks compared with the export's (manifest.json): " + "; ".join(parts))
        if self.recorded_kinds:
            out.append("note: " + ", ".join(f"{n} {k}" for k, n in sorted(self.recorded_kinds.items()))
                       + " mask(s) this project never held (another project's export) kept the kind manifest.json "
                         "records")
        if self.newer_final:
            out.append(f"note: {len(self.newer_final)} edited mask(s) were not made final: the project's final mask of "
                       f"{name_list(self.newer_final)} is newer than the export and stays; the edits are stored as "
                       f"imported masks behind it (to make them final: {_accept_hint(self.newer_final)})")
        if self.behind_final:
            out.append(f"note: {len(self.behind_final)} imported mask(s) are hidden behind the final mask their image "
                       f"already has ({name_list(self.behind_final)}): status, training and export keep the final mask "
                       f"(to make them final: {_accept_hint(self.behind_final)})")
        return out


def name_list(names: list[str], limit: int = 10) -> str:
    """``names`` for a message: the first ``limit``, then how many more."""
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _accept_hint(names: list[str], limit: int = 10) -> str:
    """The ``accept`` command line that makes the imported masks of ``names`` final."""
    import shlex

    images = " ".join(shlex.quote(n) for n in names) if len(names) <= limit else "IMAGE ..."
    return f"python -m segmenter accept PROJECT --kind imported --replace-final --images {images}"


def _import_one(project, ds, sid, path, sets, summary, id_map, rule: "MaskRule", by_stem, layer_names, tags,
                merge: LabelMerge) -> None:
    own = by_stem.get(sid) or by_stem.get(os.path.splitext(sanitize_name(path.name))[0])
    other = None  # the project's image of this name when it shows another picture
    if own is not None and not same_picture(project, own, path):
        own, other = None, own
    if own is not None:
        # The project holds this image (a re-import): its labels go onto it, it is not added again.
        summary.duplicates.append((path.name, own.name))
        summary.merged.append((path.name, own.name))
        info = own
    else:
        try:
            info = project.add_image(path)
        except DuplicateImageError as e:
            existing = e.existing
            if not _has_labels(ds, sid, sets) and not tags:
                summary.duplicates.append((path.name, existing))  # a bare copy
                return
            # Same pixels, another sample with labels of its own: keep it, say so.
            info = project.add_image(path, allow_same_content=True)
            summary.notes.append(f"note: {path.name} has the same pixels as {existing} but labels of its own; "
                                 "kept as a separate image")
        except AnnotationError as e:
            summary.skipped.append((path.name, str(e).split(": ", 1)[-1]))
            return
        summary.added.append(info)
        by_stem.setdefault(info.stem, info)
        if other is not None:
            summary.notes.append(f"note: images/{path.name} is another picture than the project's {other.name} "
                                 f"(same name, other pixels); added as the new image {info.name} with its labels; "
                                 f"the project's {other.name} is unchanged")
    id_map[sid] = info.id
    # Labels of this image: one failure skips that label only, with its reason. On an image the
    # project held, what was drawn or set there since is kept (see LabelMerge).
    if ds.has_mask(sid):
        try:
            summary.masks += rule.store(project, merge, info, sid, ds.mask(sid), held=own is not None)
        except AnnotationError as e:
            summary.skipped.append((f"masks/{sid}.png", str(e).split(": ", 1)[-1]))
    for s in sets:
        sp = ds.scribble_path(s, sid)
        if sp.is_file():
            try:
                layer = layer_names.get(s) if isinstance(layer_names.get(s), str) and layer_names.get(s) else s
                summary.scribbles += merge.scribbles(project, info.id, ds.scribbles(s, sid), layer,
                                                     f"import:{ds.name}")
            except AnnotationError as e:
                summary.skipped.append((f"scribbles/{s}/{sp.name}", str(e).split(": ", 1)[-1]))
    if tags:
        try:
            merge.tags(project, info.id, tags)
        except AnnotationError as e:
            summary.skipped.append((f"tags.json ({sid})", str(e).split(": ", 1)[-1]))


def _read_manifest(ds: FolderDataset) -> tuple[dict, str]:
    """manifest.json of an export of this tool, read once for the mask kinds and the layer names:
    ``(manifest, "")``; ``({}, "")`` without one; ``({}, why)`` when it cannot be used."""
    p = ds.root / "manifest.json"
    if not p.is_file():
        return {}, ""
    try:
        m = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        return {}, str(e)
    return (m, "") if isinstance(m, dict) else ({}, "not a JSON object")


def _read_tags(ds: FolderDataset, summary: ImportSummary) -> dict[str, dict[int, str]]:
    """``{stem: {class index: state}}`` from tags.json (as the folder and weak exports write it);
    a tags.json that cannot be used is skipped with its reason."""
    from .formats.weak import read_tags

    p = ds.root / "tags.json"
    if not p.is_file():
        return {}
    try:
        tj = json.loads(p.read_text(encoding="utf-8-sig"))
        if not isinstance(tj, dict):
            raise AnnotationError("tags.json: expected {\"classes\": [...], \"tags\": {stem: {class: state}}}.")
        return read_tags(ds.root, tj, {n.strip().lower(): k for k, n in enumerate(ds.classes)})
    except ValueError as e:
        summary.skipped.append(("tags.json", f"not valid JSON ({e}); no tags imported"))
    except AnnotationError as e:
        summary.skipped.append(("tags.json", str(e).split(": ", 1)[-1] + " No tags imported."))
    return {}


def _meta_colors(ds: FolderDataset, notes: list[str]) -> list[tuple[int, int, int] | None]:
    """meta.json's ``colors`` (one ``#rrggbb`` per class), ``None`` where absent or bad (noted)."""
    raw = ds.meta.get("colors")
    out: list[tuple[int, int, int] | None] = [None] * ds.num_classes
    if raw is None:
        return out
    where = "meta.json"
    if not isinstance(raw, list) or len(raw) != ds.num_classes:
        notes.append(f"note: {where}: 'colors' is not a list of {ds.num_classes} colours (one per class); "
                     "the classes get the default colours")
        return out
    for k, (name, c) in enumerate(zip(ds.classes, raw)):
        try:
            out[k] = parse_color(c)
        except AnnotationError:
            notes.append(f"note: {where}: 'colors' gives class '{name}' the colour {json.dumps(c)}, not #rrggbb; "
                         "it gets the default colour")
    return out


def _mask_kinds(ds: FolderDataset, kind: str, manifest: dict, manifest_error: str):
    """``stem -> kind`` for the masks of ``ds`` (``manifest``, ``manifest_error``: from
    :func:`_read_manifest`); validates ``kind`` first (nothing written yet)."""
    from .schema import MASK_KINDS

    kind = str(kind).strip().lower()
    if kind == "manifest":
        if manifest_error or not (ds.root / "manifest.json").is_file():
            why = manifest_error or "there is none"
            raise AnnotationError(f"{ds.root}: kind=manifest needs a readable manifest.json ({why}).")
        recorded = manifest.get("masks", {})
        if not isinstance(recorded, dict):
            recorded = {}
        return lambda sid: (recorded.get(sid) or {}).get("kind") if (recorded.get(sid) or {}).get("kind") in MASK_KINDS \
            else "imported"
    if kind not in MASK_KINDS:
        raise AnnotationError(f"option kind={kind}: must be one of {', '.join(MASK_KINDS)} or manifest.")
    return lambda sid: kind


def _has_labels(ds: FolderDataset, sid: str, sets: list[str]) -> bool:
    return ds.has_mask(sid) or any(ds.scribble_path(s, sid).is_file() for s in sets)
