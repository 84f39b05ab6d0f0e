"""Shared machinery of the formats: errors, options, export selection, manifest, safe imports.

Export side: :func:`export_items` picks the images and their masks (``ExportOptions.masks``),
with sanitised, unique stems; :func:`write_manifest` records the kind and provenance of every
exported mask (and the image sets); :func:`write_labels` writes ``labels.json``.

Import side: a format parses its files into :class:`ImportItem` objects and calls
:func:`apply_import`, which validates *everything* first (class names, image matches, duplicate
names, mask sizes and values) and only then writes, inside one project transaction, so a failed
import leaves the project unchanged.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .. import imageio
from ..errors import AnnotationError, DuplicateImageError, ImageError, LabelMapError
from ..schema import MASK_KINDS, TAG_STATES
from ..store import ImportSummary, MaskInfo, _now, color_hex, parse_color, sanitize_name
from . import ExportOptions

IGNORE = 255
#: Written into every export: kind and provenance of each mask, image sets.
MANIFEST = "manifest.json"
#: Written into every export: ``[{"index", "name", "color"}]`` for every class.
LABELS = "labels.json"


# ----------------------------------------------------------------------------- errors
class FormatError(AnnotationError):
    """A dataset file is malformed or does not fit the project; the message names the file."""


class DuplicateNameError(FormatError):
    """Two files of a dataset map to the same image name."""


class UnknownClassError(FormatError):
    """A dataset names a class / category the project does not have."""


class SizeMismatchError(FormatError, LabelMapError):
    """A mask's size differs from its image's."""


# ----------------------------------------------------------------------------- options
def check_options(fmt_name: str, options: dict, known: dict[str, str]) -> dict:
    """Refuse unknown option keys, naming the known ones with their help."""
    bad = sorted(set(options) - set(known))
    if bad:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items()) or "none"
        raise FormatError(f"format '{fmt_name}' has no option '{bad[0]}' (options: {listing}).")
    return options


def opt_bool(options: dict, key: str, default: bool) -> bool:
    v = options.get(key, default)
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on", "y"):
        return True
    if s in ("0", "false", "no", "off", "n"):
        return False
    raise FormatError(f"option {key}={v}: use true or false.")


def opt_choice(options: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    v = str(options.get(key, default)).strip().lower()
    if v not in choices:
        raise FormatError(f"option {key}={v}: must be one of {', '.join(choices)}.")
    return v


def opt_int(options: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = options.get(key, default)
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise FormatError(f"option {key}={v}: must be a whole number.") from None
    if not lo <= n <= hi:
        raise FormatError(f"option {key}={v}: must be between {lo} and {hi}.")
    return n


COMMON_EXPORT_OPTIONS = {"images": "copy (default) or none: also write the image files"}
COMMON_IMPORT_OPTIONS = {
    "kind": f"mask kind to store ({', '.join(MASK_KINDS)}; default imported), or 'manifest' to restore "
            "the kinds recorded in manifest.json",
    "add_classes": "true: add classes the project lacks instead of failing (default false)",
}


# ----------------------------------------------------------------------------- export side
@dataclass
class ExportItem:
    """One image to export: its info, a unique safe stem, and its chosen mask (or None)."""

    info: object
    stem: str
    mask: np.ndarray | None = None
    mask_info: object | None = None
    #: set by :func:`copy_image`: the image file was written upright (its EXIF orientation turns it)
    upright: bool = False

    @property
    def ext(self) -> str:
        return Path(self.info.file).suffix.lower() or ".png"

    @property
    def file_name(self) -> str:
        return f"{self.stem}{self.ext}"


def selected_images(project, options: ExportOptions) -> list:
    images = project.images()
    if options.image_ids is not None:
        keep = set(int(i) for i in options.image_ids)
        images = [i for i in images if i.id in keep]
    return images


def unique_stems(images) -> list[str]:
    """Sanitised stems; two images mapping to the same file name is a :class:`DuplicateNameError`."""
    seen: dict[str, tuple[str, str]] = {}
    out = []
    for info in images:
        stem = sanitize_name(info.stem)
        key = stem.lower()
        if key in seen:
            first, first_stem = seen[key]
            written = f"'{stem}'" if stem == first_stem else f"'{first_stem}' and '{stem}', one file on Windows and macOS"
            raise DuplicateNameError(
                f"images '{first}' and '{info.name}' would both be written as {written} (their names differ only "
                "in case or in characters that are not allowed in file names); rename one of them "
                f"(python -m segmenter rename-image PROJECT '{info.name}' NEW_NAME).")
        seen[key] = (info.name, stem)
        out.append(stem)
    return out


def export_items(project, options: ExportOptions, with_masks: bool | str = True) -> Iterator[ExportItem]:
    """Yield :class:`ExportItem` for every selected image.

    ``with_masks``: True reads the chosen mask (once); ``"info"`` only looks up which mask
    (``mask_info``; read it later with :func:`read_mask_file`); False skips masks.
    """
    images = selected_images(project, options)
    for info, stem in zip(images, unique_stems(images)):
        item = ExportItem(info, stem)
        if with_masks:
            got = export_mask(project, info, options, read=with_masks is True)
            if got is not None:
                item.mask, item.mask_info = got
        yield item


#: Stored kinds an export corrects by strokes drawn after them (a final mask accepted before the
#: latest strokes, a prediction made before them): :func:`export_mask`.
STROKE_CORRECTED_KINDS = ("final", "predicted", "pseudo")


def export_mask(project, info, options: ExportOptions, read: bool = True, raise_unreadable: bool = False):
    """``(mask, MaskInfo)`` of the first kind of ``options.kinds`` that the image ``info`` has, or
    ``None``; ``mask`` is ``None`` when not ``read`` (read it with :func:`read_mask_file`).

    A ``final``, ``predicted`` or ``pseudo`` mask older than strokes drawn since (a layer whose
    current strokes were saved after it, :meth:`Project.layers_changed_since`) that contradicts
    them is exported corrected by them as ``predict`` corrects (:func:`correct_stale_mask`; always
    read), its source marked, its name added to ``options.corrected_final`` /
    ``options.corrected`` / ``options.corrected_pseudo``; where
    that cannot be done (the engine cannot be imported) the image gets no mask and its name goes
    to ``options.stale_left_out``. With ``masks=best``, an image with strokes and no stored mask
    gets a pseudo-mask made from them (:func:`pseudo_from_strokes`, kind ``pseudo``, name in
    ``options.pseudo_at_export``); with ``masks=final``, such an image's name goes to
    ``options.strokes_without_final``. :func:`annotations.formats.export_project` turns these into
    notes, and ``options.chosen`` into the breakdown by kind. Where the image is needed (a
    correction, a pseudo-mask) and its file is missing or unreadable, the image gets no mask and its
    name goes to ``options.file_left_out`` (``raise_unreadable``: the :class:`ImageError` instead).
    """
    try:
        got = _export_mask(project, info, options, read)
    except ImageError:  # the image is needed (a correction, a pseudo-mask) and its file is gone or broken
        if raise_unreadable:
            raise
        options.file_left_out.append(info.name)
        return None
    if got is not None:
        options.chosen[info.id] = got[1].kind
    return got


def _export_mask(project, info, options: ExportOptions, read: bool):
    absent = absent_classes(project, info.id)
    for kind in options.kinds:
        mi = project.mask_info(info.id, kind)
        if mi is None:
            continue
        # only the image's stroke layer counts (Project.stroke_layer): at most one layer
        layers = project.layers_changed_since(info.id, mi.created) if kind in STROKE_CORRECTED_KINDS else []
        if layers or absent:
            got = _corrected(project, info.id, mi, layers[0] if layers else None, absent)
            if got is None:
                options.stale_left_out.append(info.name)
                return None
            mask, out_mi, by_strokes, shown = got
            if by_strokes:
                {"final": options.corrected_final, "pseudo": options.corrected_pseudo}.get(
                    kind, options.corrected).append(info.name)
            if shown:
                options.corrected_absent.append(info.name)
            return mask, out_mi
        return (read_mask_file(project.root / mi.file) if read else None), mi
    layer = project.stroke_layer(info.id)  # the layer whose strokes count for the image, if any
    if layer is None:
        return None
    if options.masks == "final":
        options.strokes_without_final.append(info.name)
        return None
    try:
        got = pseudo_from_strokes(project, info.id, layer)
    except ImportError:  # pragma: no cover - the engine ships with this package
        options.stale_left_out.append(info.name)
        return None
    if got is not None:
        options.pseudo_at_export.append(info.name)
        options.pseudo_method = got[1].source.split("(", 1)[0]  # the method's name
    return got


def absent_classes(project, image_id: int) -> list[int]:
    """The classes the image is tagged absent."""
    return [c for c, st in project.tags(image_id).items() if st == "absent"]


def pseudo_from_strokes(project, image_id: int, layer: str, scribbles=None):
    """``(mask, MaskInfo)``: the pseudo-mask of the current strokes of ``layer`` made at export by
    the default method of :mod:`segmenter.pseudo` (what ``python -m segmenter pseudo`` stores:
    ``get_method(None)(image, scribbles, num_classes)``), strokes of a class tagged absent on the
    image left out (:func:`segmenter.preview.without_absent`: the tag wins). The MaskInfo (kind
    ``pseudo``, nothing stored: ``id`` 0, no file) says where it came from. ``None`` when no
    stroke is left; ``ImportError`` when the engine cannot be imported. ``scribbles``: these
    strokes instead of the layer's current ones (an import recomputing what an export wrote)."""
    from segmenter.preview import without_absent  # lazily: annotations imports without the engine
    from segmenter.pseudo import get_method

    scr = project.scribbles(image_id, layer) if scribbles is None else scribbles
    if scr is None:
        return None
    scr = without_absent(scr, absent_classes(project, image_id))
    if not (scr != IGNORE).any():
        return None
    method = get_method(None)
    r = method(project.load_image(image_id), scr, project.num_classes, background=project.background_index)
    mi = MaskInfo(id=0, image_id=int(image_id), kind="pseudo", source=f"{method.name}(strokes of '{layer}' at export)",
                  model_version=None, uncertainty=None, created=_now(), file="", conf_file=None)
    return r.mask, mi


def correct_stale_mask(project, image_id: int, mi, layer: str | None):
    """``(mask, MaskInfo)``: the stored mask ``mi`` (a prediction, or a final mask accepted before
    the latest strokes) corrected by the current strokes of ``layer`` with
    :func:`segmenter.preview.correct_prediction` and the confidence stored with it (none for a
    final mask: all of it is sure), as ``python -m segmenter predict`` does (strokes of a class
    tagged absent left out); pixels of a class the image is tagged absent are re-segmented
    without that class too. The MaskInfo's source says so, its kind is kept. The mask as stored
    (and ``mi`` itself) when no stroke and no tag contradicts it; ``None`` when the engine cannot
    be imported."""
    got = _corrected(project, image_id, mi, layer, absent_classes(project, image_id))
    return None if got is None else got[:2]


def _corrected(project, image_id: int, mi, layer: str | None, absent: list[int]):
    """``(mask, MaskInfo, by_strokes, shown)`` for :func:`correct_stale_mask`: ``by_strokes``
    whether strokes of ``layer`` contradicted the mask, ``shown`` the classes tagged ``absent``
    that the stored mask showed (their pixels are given to the pseudo-labeller as unknown, the
    rest of the mask as the prediction, the strokes without those classes: the tag wins, as
    ``predict`` makes it). ``None`` when the engine cannot be imported."""
    import dataclasses

    try:  # lazily: annotations imports without the engine (and torch)
        from segmenter.preview import without_absent
        from segmenter.pseudo import DEFAULT_METHOD
    except ImportError:  # pragma: no cover - the engine ships with this package
        return None
    mask = read_mask_file(project.root / mi.file)
    shown = [c for c in absent if (mask == c).any()]
    scr = project.scribbles(image_id, layer) if layer is not None else None
    if scr is not None and scr.shape != mask.shape:
        scr = None
    if scr is not None:
        scr = without_absent(scr, absent)
    drawn = scr != IGNORE if scr is not None else np.zeros(mask.shape, bool)
    by_strokes = bool(drawn.any()) and not np.array_equal(mask[drawn], scr[drawn])
    if not by_strokes and not shown:
        return mask, mi, False, []  # nothing contradicts it (e.g. the same strokes saved again)
    conf = imageio.read_label_map(project.root / mi.conf_file).astype(np.float32) / 255.0 if mi.conf_file else None
    prediction = np.where(np.isin(mask, shown), IGNORE, mask).astype(np.uint8)
    out = _resegment(project.load_image(image_id), scr if drawn.any() else None, prediction,
                     project.num_classes, conf, list(absent), background=project.background_index)
    marks = []
    if by_strokes:
        marks.append(f"{DEFAULT_METHOD}(strokes of '{layer}' at export)")
    if shown:
        names = {c.idx: c.name for c in project.classes()}
        what = ", ".join(f"'{names.get(c, c)}'" for c in shown)
        marks.append(f"{DEFAULT_METHOD}(without {what}, tagged absent, at export)")
    return out, dataclasses.replace(mi, source=f"{mi.source}+{'+'.join(marks)}"), by_strokes, shown


def _resegment(image, scribbles, prediction, num_classes: int, confidence, absent: list[int],
               background: int = 0) -> np.ndarray:
    """``prediction`` (255 where unknown) corrected by ``scribbles`` (``None``: no stroke) with
    :func:`segmenter.preview.correct_prediction`; with no stroke, its own pixels are the seeds (as
    that function lends them far from every stroke; all of them when none is confident). No pixel
    ends in a class of ``absent``; when nothing is left to seed from (the mask showed only classes
    tagged absent), the unknown pixels take the one class left, or stay 255 when several are."""
    from segmenter.preview import correct_prediction, correction_seeds, prediction_prior
    from segmenter.pseudo import get_method

    if scribbles is not None:
        r = correct_prediction(image, scribbles, prediction, num_classes, confidence, background=background)
    else:
        seeds = correction_seeds(prediction, np.full(prediction.shape, IGNORE, np.uint8), num_classes,
                                 confidence=confidence)
        if not (seeds != IGNORE).any():  # nothing is sure (a weak model's prediction): its labels are the seeds
            seeds = prediction
        if not (seeds != IGNORE).any():  # the mask showed classes tagged absent only
            left = [c for c in range(num_classes) if c not in absent]
            return np.where(prediction == IGNORE, left[0], prediction).astype(np.uint8) if len(left) == 1 \
                else prediction
        r = get_method(None)(image, seeds, num_classes, prior=prediction_prior(prediction, confidence, num_classes),
                             background=background)
    out = np.asarray(r.mask, np.uint8).copy()
    bad = np.isin(out, absent)
    if bad.any():  # the pseudo-labeller's next choice there, never a class tagged absent
        probs = np.array(r.probs, np.float32, copy=True)
        probs[list(absent)] = -1.0
        out[bad] = probs.argmax(0).astype(np.uint8)[bad]
    return out


def read_mask_file(path: Path) -> np.ndarray:
    """A stored (H, W) uint8 mask PNG; OpenCV's decoder when it gives a 2-D uint8 map (faster), else PIL."""
    try:
        import cv2  # optional speed-up; imageio (PIL) is the reference reader
    except ImportError:  # pragma: no cover
        cv2 = None
    if cv2 is not None:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.ndim == 2 and arr.dtype == np.uint8:
            return arr
    return imageio.read_label_map(path)


def write_image_file(project, info, dest: Path, quality: int = 95) -> bool:
    """Write the project image ``info`` to ``dest`` as the tool shows and annotates it: the
    original bytes, or, for a file whose EXIF orientation turns it (a phone photo), the image
    upright, re-encoded in its own format (:func:`imageio.upright_image_bytes`; a JPEG at
    ``quality``, its comment recording the original's sha256 so that :func:`same_picture` knows it
    again). Readers that ignore EXIF then see it the size and way round of its mask. Whether it
    was written upright (:func:`upright_note` counts them)."""
    src = project.root / info.file
    data = imageio.upright_image_bytes(src, quality, source_sha256=info.sha256)
    if data is None:
        shutil.copyfile(src, dest)
        return False
    dest.write_bytes(data)
    return True


def upright_note(count: int, quality: int = 95) -> list[str]:
    """The export note counting the images :func:`write_image_file` wrote upright (none when 0)."""
    if not count:
        return []
    return [f"note: {count} image(s) have an EXIF orientation (phone photos) and were written upright, as the tool "
            f"shows and annotates them (re-encoded: JPEG at quality {quality}, PNG and TIFF losslessly; orientation tag "
            "removed): readers that "
            "ignore EXIF see them the size of their masks"]


def copy_image(project, item: ExportItem, dest_dir: Path, options: ExportOptions) -> str | None:
    """Write the image to ``dest_dir/<stem><ext>`` (:func:`write_image_file`: the original bytes,
    or the image upright when its EXIF orientation turns it; ``item.upright`` says which) unless
    option images=none."""
    if opt_choice(options.extra, "images", ("copy", "none"), "copy") == "none":
        return None
    dest_dir.mkdir(parents=True, exist_ok=True)
    item.upright = write_image_file(project, item.info, dest_dir / item.file_name)
    return item.file_name


def manifest_entry(info) -> dict:
    return {"kind": info.kind, "source": info.source, "model_version": info.model_version,
            "created": info.created, "uncertainty": info.uncertainty}


def classes_json(project) -> list[dict]:
    return [{"index": c.idx, "name": c.name, "color": c.hex} for c in project.classes()]


def layer_dirs(layers) -> dict[str, str]:
    """``{folder name: layer}``: a safe folder name for every scribble layer, unique ignoring case
    (``r1/a`` and ``r2/a`` become ``a`` and ``a_2``; on Windows and macOS ``A`` and ``a`` are one
    folder). Exports record this in manifest.json's ``layers`` so an import restores the names."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for layer in layers:
        base = d = sanitize_name(layer, "layer")
        k = 2
        while d.lower() in taken:
            d = f"{base}_{k}"
            k += 1
        taken.add(d.lower())
        out[d] = layer
    return out


def write_scribble_layers(project, image_id: int, stem: str, scribbles_dir: Path, dirs: dict[str, str]) -> list[str]:
    """Write ``<scribbles_dir>/<folder>/<stem>.png``, the current version of every layer of ``dirs``
    (:func:`layer_dirs`) that has strokes on ``image_id``; return those layers, in ``dirs``' order.
    The ``folder`` and ``weak`` exports both write their scribbles with it."""
    written = []
    for d, layer in dirs.items():
        scr = project.scribbles(image_id, layer)
        if scr is None:
            continue
        p = scribbles_dir / d / f"{stem}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(imageio.encode_label_png(scr))
        written.append(layer)
    return written


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_labels(project, out_dir: Path) -> None:
    write_json(out_dir / LABELS, classes_json(project))


def write_manifest(project, out_dir: Path, fmt: str, options: ExportOptions, items: list[ExportItem],
                   **extra) -> None:
    """``manifest.json``: format, mask choice, classes, image sets, and per mask its provenance."""
    stems = {it.info.id: it.stem for it in items}
    sets = {}
    for s in project.image_sets():
        members = [stems[i] for i in project.image_set(s) if i in stems]
        if members:
            sets[s] = members
    masks = {it.stem: manifest_entry(it.mask_info) for it in items if it.mask_info is not None}
    # The project image each stem came from: a re-import matches it even when the exported file is
    # a re-encoded copy (VOC writes JPEGs) rather than the original bytes.
    shas = {it.stem: it.info.sha256 for it in items}
    write_json(out_dir / MANIFEST, {"format": fmt, "masks_option": options.masks, "classes": classes_json(project),
                                    "image_sets": sets, "masks": masks, "image_sha256": shas,
                                    "exported": project._stamp(), **extra})


# ----------------------------------------------------------------------------- import side
#: Folders that archivers add beside the data (macOS Finder's "Compress" adds ``__MACOSX/``).
JUNK_DIRS = ("__MACOSX",)


def is_junk_name(name: str) -> bool:
    """A hidden entry (``.DS_Store``, ``._x.png``) or an archiver's folder (``__MACOSX``): not data."""
    return name.startswith(".") or name in JUNK_DIRS


def png_files(folder: Path) -> list[Path]:
    """The ``.png`` files directly in ``folder`` (any case of the extension: ``x.PNG`` too), sorted,
    hidden files left out."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith("."))


@contextmanager
def dataset_root(path: Path) -> Iterator[Path]:
    """A folder to read: ``path`` itself, or a ``.zip`` extracted to a temp folder (names checked)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix=".import.") as td:
            root = Path(td) / path.name  # errors then name the zip, not the temp folder
            try:
                with zipfile.ZipFile(path) as zf:
                    for n in zf.namelist():
                        parts = Path(n).parts
                        if n.startswith(("/", "\\")) or ".." in parts or ":" in n:
                            raise FormatError(f"{path.name}: unsafe path '{n}' in the zip; refusing to extract.")
                    zf.extractall(root)
            except zipfile.BadZipFile as e:
                raise FormatError(f"{path.name}: not a readable zip file ({e}).") from None
            kids = [k for k in root.iterdir() if not is_junk_name(k.name)]
            try:
                yield kids[0] if len(kids) == 1 and kids[0].is_dir() else root
            except AnnotationError as e:  # a message naming a full path: the zip's, not the temp folder's
                e.args = tuple(a.replace(str(root), str(path)) if isinstance(a, str) else a for a in e.args)
                raise
    else:
        yield path


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path.name}: file not found ({path}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path.name}: not valid JSON ({e}).") from None


def read_labels(path: Path) -> tuple[list[str], list | None] | None:
    """Class names and colours from ``labels.json`` (``[{"index", "name", "color"}]``), or None."""
    if not path.is_file():
        return None
    data = read_json(path)
    try:
        rows = sorted(data, key=lambda r: int(r["index"]))
        names = [str(r["name"]) for r in rows]
        colors = [r.get("color") for r in rows]
    except (TypeError, KeyError, ValueError):
        raise FormatError(f"{path.name}: expected a list of {{\"index\", \"name\", \"color\"}}.") from None
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise FormatError(f"{path.name}: class indices must run 0, 1, 2, ... without gaps.")
    return names, colors


def read_manifest(root: Path) -> dict:
    p = Path(root) / MANIFEST
    return read_json(p) if p.is_file() else {}


@dataclass
class ImportItem:
    """One image of a dataset being imported.

    ``name``: the image's file name in the dataset (matched to project images by name, then stem,
    then content). ``image_path``: the file to add when the project lacks it (None: must match).
    ``mask``: (H, W) uint8 label map in the *dataset's* class indices (255 = ignore), or a
    zero-argument loader of one, or None. ``scribbles``: ``{layer: map or loader}``.
    ``tags``: ``{dataset class index: "present" | "absent"}``. ``where``: the file to name in errors.
    """

    name: str
    image_path: Path | None = None
    mask: np.ndarray | Callable[[], np.ndarray] | None = None
    size: tuple[int, int] | None = None
    scribbles: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    where: str = ""
    kind: str | None = None
    #: Alternative to ``mask``: a loader given the image's ``(H, W)`` (formats with normalised coordinates).
    mask_sized: Callable[[tuple[int, int]], np.ndarray] | None = None

    @property
    def stem(self) -> str:
        return os.path.splitext(os.path.basename(self.name))[0]


@dataclass
class ClassPlan:
    lut: np.ndarray  # uint8[256]: dataset index -> project index (255 -> 255)
    set_names: list[str] | None = None  # replace the project's classes (no annotations yet)
    add: list[str] = field(default_factory=list)
    colors: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _has_annotations(project) -> bool:
    """The same test as ``Project.set_classes``: any scribble version, mask or tag."""
    return bool(project._q("SELECT (SELECT COUNT(*) FROM scribble_versions) + (SELECT COUNT(*) FROM masks) + "
                           "(SELECT COUNT(*) FROM tags)")[0][0])


def plan_classes(project, names: list[str], colors: list | None, options: dict, where: str) -> ClassPlan:
    """Map the dataset's class names to project indices (see :func:`apply_import`)."""
    if len(names) > 255:
        raise FormatError(f"{where}: {len(names)} classes; a project holds at most 255.")
    low = [n.strip().lower() for n in names]
    if len(set(low)) != len(low):
        dup = next(n for n in names if low.count(n.strip().lower()) > 1)
        raise DuplicateNameError(f"{where}: the class name '{dup}' appears twice.")
    col = {}
    for n, c in zip(names, colors or [None] * len(names)):
        if c is not None:
            try:
                col[n] = parse_color(c)
            except AnnotationError:
                raise FormatError(f"{where}: class '{n}' has colour '{c}', not #rrggbb.") from None
    lut = np.full(256, IGNORE, np.uint8)
    if not _has_annotations(project):
        lut[: len(names)] = np.arange(len(names), dtype=np.uint8)
        return ClassPlan(lut, set_names=list(names), colors=col)
    proj = {c.name.lower(): c.idx for c in project.classes()}
    unknown = [n for n in names if n.strip().lower() not in proj]
    if unknown and not opt_bool(options, "add_classes", False):
        raise UnknownClassError(
            f"{where}: class(es) {', '.join(repr(u) for u in unknown)} are not in this project (classes: "
            f"{', '.join(project.class_names)}); add them first, or import with --option add_classes=true.")
    if project.num_classes + len(unknown) > 255:
        raise FormatError(f"{where}: adding {len(unknown)} classes would exceed 255 classes.")
    nxt = project.num_classes
    for k, n in enumerate(names):
        key = n.strip().lower()
        if key in proj:
            lut[k] = proj[key]
        else:
            lut[k] = nxt
            nxt += 1
    return ClassPlan(lut, add=unknown, colors=col)


#: Import options of the formats that carry strokes and tags (folder, weak): what to do when an
#: image the project already holds has other labels than the dataset's (see :class:`LabelMerge`).
MERGE_OPTIONS = {
    "scribbles": "keep (default) or replace: strokes of an image the project holds that differ from the dataset's "
                 "stay, or become the dataset's",
    "tags": "keep (default) or replace: a project tag that differs from the dataset's stays, or becomes the dataset's",
}


class LabelMerge:
    """Stores an import's labels onto images without undoing work done in the project since.

    One rule for every importer (the folder dataset's and :func:`apply_import`'s):

    * a mask equal to the current one of its kind is skipped (no new version); another one is
      stored as a new version (importing an edited export);
    * a scribble map equal to the current one of its layer is skipped; a layer without strokes
      gets the dataset's, unless the dataset is an export (:attr:`exported`) of these very strokes,
      undone or cleared in the project since; a layer whose current strokes differ keeps the
      project's strokes (option ``scribbles=replace``: takes the dataset's as a new version);
    * a tag the project does not have is set, unless it was cleared in the project after the
      export; one it has with another state keeps the project's (option ``tags=replace``: takes
      the dataset's).

    The images whose labels were kept are counted in one note (:meth:`notes`).
    """

    def __init__(self, options: dict | None = None):
        options = options or {}
        self.replace_scribbles = opt_choice(options, "scribbles", ("keep", "replace"), "keep") == "replace"
        self.replace_tags = opt_choice(options, "tags", ("keep", "replace"), "keep") == "replace"
        self.kept_scribbles: set[int] = set()  # image ids
        self.undone_scribbles: set[int] = set()  # exported strokes undone in the project since
        self.kept_tags: set[int] = set()
        self.tags_set = 0
        #: when the export being imported was written (its manifest's ``exported``), if known: a tag
        #: cleared in the project after it stays cleared
        self.exported: str | None = None

    def mask(self, project, image_id: int, mask: np.ndarray, kind: str, source: str) -> bool:
        """Store ``mask`` unless it equals the current mask of ``kind``; whether it was stored."""
        cur = project.mask(image_id, kind)
        if cur is not None and cur.shape == np.shape(mask) and np.array_equal(cur, mask):
            return False
        project.save_mask(image_id, mask, kind, source=source)
        return True

    def scribbles(self, project, image_id: int, scribbles: np.ndarray, layer: str, author: str) -> bool:
        """Store ``scribbles`` as the layer's new version where the rule says so; whether it was stored."""
        cur = project.scribbles(image_id, layer)
        if cur is None and not self.replace_scribbles and isinstance(self.exported, str):
            # strokes the project held when this export was written, undone or cleared since: they
            # stay gone (a layer that never had these strokes takes them, as below)
            then = project.scribbles_at(image_id, self.exported, layer)
            if then is not None and then.shape == np.shape(scribbles) and np.array_equal(then, scribbles):
                self.undone_scribbles.add(int(image_id))
                return False
        if cur is not None:
            if cur.shape == np.shape(scribbles) and np.array_equal(cur, scribbles):
                return False
            if not self.replace_scribbles:
                self.kept_scribbles.add(int(image_id))
                return False
        project.save_scribbles(image_id, scribbles, layer=layer, author=author)
        return True

    def tags(self, project, image_id: int, tags: dict[int, str]) -> int:
        """Set the tags ``{project class index: state}`` where the rule says so; how many were set."""
        have = project.tags(image_id)
        n = 0
        for ci, state in tags.items():
            cur = have.get(int(ci), "unknown")
            if cur == state:
                continue
            if cur != "unknown" and not self.replace_tags:
                self.kept_tags.add(int(image_id))
                continue
            if cur == "unknown" and not self.replace_tags and isinstance(self.exported, str):
                cleared = project.tag_cleared(image_id, int(ci))
                if cleared is not None and cleared > self.exported:  # cleared by a person since the export
                    self.kept_tags.add(int(image_id))
                    continue
            project.set_tag(image_id, int(ci), state)
            n += 1
        self.tags_set += n
        return n

    def notes(self) -> list[str]:
        """One note counting the images whose own strokes / tags were kept, and how to take the dataset's."""
        kept = self.kept_scribbles | self.kept_tags
        out = []
        if self.undone_scribbles:
            out.append(f"note: {len(self.undone_scribbles)} image(s) had the strokes this export holds undone or "
                       "cleared in the project since it was written; they stay so (to take them back, import again "
                       "with --option scribbles=replace)")
        if not kept:
            return out
        opts = (["--option scribbles=replace"] if self.kept_scribbles else []) + \
            (["--option tags=replace"] if self.kept_tags else [])
        if self.kept_scribbles and self.kept_tags:
            what = f"strokes ({len(self.kept_scribbles)}) or tags ({len(self.kept_tags)})"
        else:
            what = "strokes" if self.kept_scribbles else "tags"
        return out + [f"note: {len(kept)} image(s) already in the project have {what} that differ from the dataset's; "
                      f"the project's were kept (to take the dataset's instead, import again with {' '.join(opts)})"]


def _load(x):
    return x() if callable(x) else x


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def same_picture(project, info, path: Path, recorded_sha: str | None = None) -> bool:
    """Whether the image file ``path`` shows the project image ``info``: the same bytes, the image
    an export recorded it came from (``recorded_sha``, manifest.json's ``image_sha256``: a VOC
    export re-encodes as JPEG), or the same decoded pixels (a lossless re-save). A project image
    whose file cannot be read is taken to match (its name is all there is to go by). An upright
    copy an export wrote of an image with an EXIF orientation (:func:`write_image_file`) matches
    too: lossless ones by their pixels, a JPEG by the sha256 its comment records."""
    if recorded_sha is not None and recorded_sha == info.sha256:
        return True
    if _file_sha(path) == info.sha256 or imageio.upright_source(path) == info.sha256:
        return True
    own = project.root / info.file
    if not own.is_file():
        return True
    try:
        a, b = imageio.read_image(own), imageio.read_image(path)
    except Exception:  # an unreadable import file: not the same picture (its own error comes later)
        return False
    return a.shape == b.shape and np.array_equal(a, b)


def apply_import(project, items: list[ImportItem], class_names: list[str], *, source: str,
                 options: dict, colors: list | None = None, image_sets: dict[str, list[str]] | None = None,
                 where: str = "dataset") -> ImportSummary:
    """Validate every item, then write them all in one transaction.

    Classes: a project without annotations takes the dataset's classes (names, order, colours);
    otherwise names are matched case-insensitively and an unknown one is an
    :class:`UnknownClassError` (or is added with option ``add_classes``). Images: matched to the
    project by name, then stem, then content; images the project lacks are added from
    ``image_path``. A name match whose ``image_path`` shows another picture (see :func:`same_picture`)
    is no match: that image is added as a new one (a unique name, e.g. ``a_2.png``) with its
    labels, and a note says so. Masks are stored as kind ``options["kind"]`` (default ``imported``).
    Labels onto an image the project holds follow :class:`LabelMerge` (options ``scribbles`` and
    ``tags``: keep, the default, or replace).
    ``image_sets``: ``{set: [image names or stems]}``.
    """
    t0 = time.perf_counter()
    kind_opt = str(options.get("kind", "imported")).strip().lower()
    if kind_opt not in MASK_KINDS + ("manifest",):
        raise FormatError(f"option kind={kind_opt}: must be one of {', '.join(MASK_KINDS + ('manifest',))}.")
    plan = plan_classes(project, class_names, colors, options, where)
    n_cls = len(class_names)

    # Duplicate names inside the dataset.
    seen: dict[str, str] = {}
    for it in items:
        key = sanitize_name(it.stem).lower()
        if key in seen:
            raise DuplicateNameError(f"{where}: '{seen[key]}' and '{it.where or it.name}' are the same image name "
                                     f"'{it.stem}'; rename one of them.")
        seen[key] = it.where or it.name

    # Match images: name, stem, then content.
    existing = project.images()
    by_name = {i.name: i for i in existing}
    by_stem: dict[str, object] = {}
    for i in existing:
        by_stem.setdefault(i.stem, i)
        by_stem.setdefault(sanitize_name(i.stem), i)
    by_sha = {i.sha256: i for i in existing}
    recorded_shas = (options.get("_manifest") or {}).get("image_sha256") or {}
    targets: list = []  # ImageInfo, or ("new", path, sha) placeholders
    new_by_sha: dict[str, int] = {}
    #: item -> the project image of its name that shows another picture (the item is added as new)
    other_picture: dict[int, str] = {}
    by_content: set[int] = set()  # items matched to a project image by content only (a duplicate: line)
    summary = ImportSummary()
    for k, it in enumerate(items):
        base = os.path.basename(it.name)
        info = by_name.get(base) or by_name.get(sanitize_name(base)) or by_stem.get(it.stem) \
            or by_stem.get(sanitize_name(it.stem))
        if info is not None and it.image_path is not None and Path(it.image_path).is_file() \
                and not same_picture(project, info, it.image_path, recorded_shas.get(it.stem)):
            # Same name, another picture (e.g. another project's a.png): its labels belong to its
            # own picture, never onto the project's unrelated image of that name.
            other_picture[k] = info.name
            info = None
        if info is None and it.image_path is not None:
            if not Path(it.image_path).is_file():
                raise FormatError(f"{where}: image file {it.image_path.name} (for {it.where or it.name}) is missing.")
            sha = _file_sha(it.image_path)
            info = by_sha.get(sha)
            twin = info.name if info is not None else items[new_by_sha[sha]].name if sha in new_by_sha else None
            if twin is not None and (it.mask is not None or it.mask_sized is not None or it.scribbles):
                # Same pixels as another image but labels of its own (a dataset can hold such
                # samples): a separate image, as the folder-dataset import does.
                h, w = imageio.image_size(it.image_path)
                targets.append(("new", it.image_path, (h, w), True))
                summary.notes.append(f"note: {it.image_path.name} has the same pixels as {twin} but labels of "
                                     "its own; kept as a separate image")
                continue
            if info is None:
                if sha in new_by_sha:
                    targets.append(("same", new_by_sha[sha]))
                    summary.duplicates.append((it.image_path.name, items[new_by_sha[sha]].name))
                    continue
                try:
                    h, w = imageio.image_size(it.image_path)
                except Exception as e:  # PIL raises many kinds
                    raise ImageError(f"{it.image_path.name}: not an image file that can be read ({e}).") from None
                new_by_sha[sha] = k
                targets.append(("new", it.image_path, (h, w)))
                continue
            summary.duplicates.append((it.image_path.name, info.name))
            by_content.add(k)
        if info is None:
            at = it.where if (it.where or "").startswith(f"{where}: ") else f"{where}: {it.where or it.name}"
            raise FormatError(f"{at}: no image named '{it.name}' in the project, and the "
                              "dataset does not hold the image file; import the images first.")
        targets.append(info)

    def size_of(k: int) -> tuple[int, int]:
        t = targets[k]
        if isinstance(t, tuple):
            return size_of(t[1]) if t[0] == "same" else t[2]
        return (t.height, t.width)

    def image_of(k: int) -> tuple[str, Path]:
        """The name and file of the image that item ``k``'s labels go onto."""
        t = targets[k]
        if isinstance(t, tuple):
            return image_of(t[1]) if t[0] == "same" else (items[k].name, Path(t[1]))
        return t.name, project.root / t.file

    def size_error(arr, k: int, what: str) -> SizeMismatchError:
        (h, w), (name, file) = size_of(k), image_of(k)
        msg = f"{what}: the mask is {arr.shape[1]}x{arr.shape[0]} but its image '{name}' is {w}x{h}"
        if arr.shape == (w, h) and h != w:
            if imageio.exif_orientation(file) in imageio.SWAPPING_ORIENTATIONS:
                msg += (f"; the image has an EXIF orientation and is used upright ({w}x{h}), as the tool shows it, "
                        "so the mask must be drawn on the upright image (this one was drawn on the image as stored, "
                        "before its EXIF rotation)")
            else:
                msg += " (the mask's width and height are swapped: was it drawn on the image turned by 90 degrees?)"
        return SizeMismatchError(msg + ".")

    manifest_kinds = {}
    if kind_opt == "manifest":
        manifest_kinds = {s: m.get("kind") for s, m in (options.get("_manifest") or {}).get("masks", {}).items()}

    # Validate labels: shape, values; convert to project indices.
    masks: dict[int, np.ndarray] = {}
    scribbles: dict[int, dict[str, np.ndarray]] = {}
    kinds: dict[int, str] = {}

    def convert(arr, k: int, what: str) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise FormatError(f"{what}: expected a 2-D index map, got shape {arr.shape}.")
        if arr.shape != size_of(k):
            raise size_error(arr, k, what)
        arr = arr.astype(np.uint8, copy=False)
        vals = np.nonzero(np.bincount(arr.ravel(), minlength=256))[0]
        bad = [int(v) for v in vals if v != IGNORE and v >= n_cls]
        if bad:
            raise FormatError(f"{what}: uses class index {bad[0]} but the dataset has {n_cls} classes "
                              f"(0..{n_cls - 1}); 255 means ignore.")
        return plan.lut[arr]

    for k, it in enumerate(items):
        if it.mask is not None or it.mask_sized is not None:
            arr = _load(it.mask) if it.mask is not None else it.mask_sized(size_of(k))
            masks[k] = convert(arr, k, it.where or it.name)
            kind = it.kind or (manifest_kinds.get(it.stem) if kind_opt == "manifest" else kind_opt) or "imported"
            if kind not in MASK_KINDS:
                raise FormatError(f"{where}: mask kind '{kind}' for {it.name} is not one of {', '.join(MASK_KINDS)}.")
            kinds[k] = kind
        for layer, scr in it.scribbles.items():
            scribbles.setdefault(k, {})[layer] = convert(_load(scr), k, f"{it.name} (scribbles '{layer}')")
        for ci, state in it.tags.items():
            if state not in TAG_STATES:
                raise FormatError(f"{where}: tag state '{state}' for {it.name} is not one of {', '.join(TAG_STATES)}.")
            if not 0 <= int(ci) < n_cls:
                raise FormatError(f"{where}: tag for {it.name} names class index {ci}, outside 0..{n_cls - 1}.")

    # Write, all or nothing.
    ids: dict[int, int] = {}
    merge = LabelMerge(options)  # checks the options scribbles= and tags= (nothing written yet)
    exported = (options.get("_manifest") or {}).get("exported")
    if isinstance(exported, str):  # an export of a project: what was undone there since stays undone
        merge.exported = exported
    with project.transaction():
        if plan.set_names is not None:
            project.set_classes(plan.set_names)
        for n in plan.add:
            project.add_class(n, plan.colors.get(n))
        for name, rgb in plan.colors.items():
            c = project.class_info(name)
            if plan.set_names is not None and c.color != rgb:
                project.recolor_class(c.idx, rgb)
        for k, it in enumerate(items):
            t = targets[k]
            if isinstance(t, tuple) and t[0] == "new":
                try:
                    info = project.add_image(t[1], name=sanitize_name(os.path.basename(it.name)),
                                             allow_same_content=len(t) > 3)
                except DuplicateImageError:  # pragma: no cover - matched by content above
                    raise
                summary.added.append(info)
                ids[k] = info.id
                if k in other_picture:
                    summary.notes.append(
                        f"note: {Path(t[1]).name} is another picture than the project's {other_picture[k]} "
                        f"(same name, other pixels); added as the new image {info.name} with its labels; the "
                        f"project's {other_picture[k]} is unchanged")
            elif isinstance(t, tuple):
                ids[k] = ids[t[1]]
            else:  # the project holds this image (a re-import): labels go onto it
                ids[k] = t.id
                if k not in by_content:
                    summary.merged.append((os.path.basename(it.image_path or it.name), t.name))
        # Labels onto images the project holds: what was done there since is kept (LabelMerge);
        # without a kind option, masks of an export of this project follow MaskRule (an unchanged
        # one is skipped, an edited one becomes final), as the folder format's import does.
        from ..importer import MaskRule

        manifest = options.get("_manifest") or None
        kind_of = {items[k].stem: kinds[k] for k in masks}
        rule = MaskRule(where, kind_of.__getitem__, explicit="kind" in options, keep_recorded_kind=False,
                        manifest=manifest if isinstance(manifest, dict) and "masks" in manifest else None)
        rule.source = source
        for k, m in masks.items():
            held = not isinstance(targets[k], tuple)
            summary.masks += rule.store(project, merge, project.image_info(ids[k]), items[k].stem, m, held)
        summary.notes.extend(rule.notes())
        for k, layers in scribbles.items():
            for layer, s in layers.items():
                summary.scribbles += merge.scribbles(project, ids[k], s, layer, source)
        for k, it in enumerate(items):
            if it.tags:
                merge.tags(project, ids[k], {int(plan.lut[int(ci)]): state for ci, state in it.tags.items()})
        summary.notes.extend(merge.notes())
        if image_sets:
            stem_to_id = {}
            for k, it in enumerate(items):
                stem_to_id[it.stem] = ids[k]
                stem_to_id[os.path.basename(it.name)] = ids[k]
            for s, members in image_sets.items():
                got = [stem_to_id[m] for m in members if m in stem_to_id]
                if got:
                    project.add_to_set(s, got)
    summary.seconds = time.perf_counter() - t0
    return summary


def read_label_png(path: Path, where: str | None = None) -> np.ndarray:
    """A PNG index map (palette PNGs give indices); errors name ``where`` (default the file name)."""
    try:
        return imageio.read_label_map(path)
    except LabelMapError as e:
        if where:
            raise FormatError(f"{where}: {str(e).split(': ', 1)[-1]}") from None
        raise


def find_image_files(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder``; two files of one stem is an error."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in imageio.IMAGE_EXTENSIONS:
            if p.stem in out:
                raise DuplicateNameError(f"{folder.name}/: '{out[p.stem].name}' and '{p.name}' have the same name "
                                         "stem; keep one of them.")
            out[p.stem] = p
    return out


def tags_csv(rows: list[tuple[str, str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "class", "state"])
    w.writerows(rows)
    return buf.getvalue()


def rgb_hex(c) -> str:
    return color_hex(parse_color(c))


# ----------------------------------------------------------------------------- shared layouts
#: Colour of 255 (void / ignore) in palette PNGs, as in Pascal VOC.
VOID_COLOR = (224, 224, 192)


def palette(project) -> list[tuple[int, int, int]]:
    """256 palette entries: class colours, black for unused indices, VOID_COLOR at 255."""
    pal = [(0, 0, 0)] * 256
    for c in project.classes():
        pal[c.idx] = c.color
    pal[IGNORE] = VOID_COLOR
    return pal


def labelmap_txt(project) -> str:
    """CVAT / Datumaro ``labelmap.txt``: ``name:r,g,b::`` per class in index order."""
    lines = ["# label:color_rgb:parts:actions"]
    for c in project.classes():
        if ":" in c.name or "\n" in c.name:
            raise FormatError(f"class name '{c.name}' contains ':' and cannot be written to labelmap.txt; "
                              "rename the class.")
        lines.append(f"{c.name}:{c.color[0]},{c.color[1]},{c.color[2]}::")
    return "\n".join(lines) + "\n"


def read_labelmap_txt(path: Path) -> tuple[list[str], list] | None:
    if not path.is_file():
        return None
    names, colors = [], []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        names.append(parts[0].strip())
        rgb = parts[1].strip() if len(parts) > 1 else ""
        try:
            colors.append(tuple(int(v) for v in rgb.split(",")) if rgb else None)
        except ValueError:
            raise FormatError(f"{path.name} line {k}: colour '{rgb}' is not r,g,b.") from None
    return names, colors


def read_class_list(root: Path, fallback: tuple[list[str], list | None] | None = None,
                    where: str = "dataset") -> tuple[list[str], list | None]:
    """Classes from ``labels.json``, else ``labelmap.txt``, else ``fallback``; else an error."""
    got = read_labels(root / LABELS) or read_labelmap_txt(root / "labelmap.txt") or fallback
    if got is None:
        raise FormatError(f"{where}: no {LABELS} or labelmap.txt to name the classes.")
    return got


def write_index_and_color(project, item: ExportItem, index_dir: Path | None, color_dir: Path | None,
                          pal: list) -> None:
    """``index_dir/<stem>.png`` (mode L) and ``color_dir/<stem>.png`` (palette PNG, same indices)."""
    if index_dir is not None:
        index_dir.mkdir(parents=True, exist_ok=True)
        (index_dir / f"{item.stem}.png").write_bytes(imageio.encode_label_png(item.mask))
    if color_dir is not None:
        color_dir.mkdir(parents=True, exist_ok=True)
        (color_dir / f"{item.stem}.png").write_bytes(imageio.encode_label_png(item.mask, pal))


def items_from_folders(root: Path, image_dir: str, mask_dir: str) -> list[ImportItem]:
    """Items for a layout of ``image_dir/<stem>.<ext>`` and ``mask_dir/<stem>.png`` (either may be absent)."""
    images = find_image_files(root / image_dir)
    masks: dict[str, Path] = {}
    md = root / mask_dir
    for p in png_files(md):
        masks[p.stem] = p
    items = []
    for stem in sorted(set(images) | set(masks)):
        ip = images.get(stem)
        mp = masks.get(stem)
        where = f"{mask_dir}/{mp.name}" if mp else f"{image_dir}/{ip.name}"
        items.append(ImportItem(name=ip.name if ip else f"{stem}.png", image_path=ip,
                                mask=(lambda p=mp, w=where: read_label_png(p, w)) if mp else None, where=where))
    return items


def finish_options(options: dict | None, root: Path, known: dict, fmt: str) -> dict:
    """Check option keys; attach manifest.json (for kind=manifest)."""
    opts = dict(options or {})
    check_options(fmt, opts, known)
    opts["_manifest"] = read_manifest(root)
    return opts


def manifest_sets(opts: dict) -> dict[str, list[str]] | None:
    """The image sets manifest.json records; ``{}`` when it records none (an export of a project
    without sets: files such as VOC's trainval.txt are then no set of the project); ``None``
    without a manifest."""
    m = opts.get("_manifest") or {}
    if "image_sets" not in m:
        return None
    return m["image_sets"] if isinstance(m["image_sets"], dict) else None


def colors_to_index(rgb: np.ndarray, mapping: dict[tuple[int, int, int], int], where: str) -> np.ndarray:
    """Map an (H, W, 3) uint8 colour mask to (H, W) uint8 indices; an unmapped colour is an error."""
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    uniq, inv = np.unique(code.ravel(), return_inverse=True)
    lut = np.empty(len(uniq), np.uint8)
    keyed = {(r << 16) | (g << 8) | b: v for (r, g, b), v in mapping.items()}
    for k, u in enumerate(uniq.tolist()):
        if u not in keyed:
            col = "#%06x" % u
            known = ", ".join(f"#{c:06x}" for c in sorted(keyed)) or "none"
            raise FormatError(f"{where}: colour {col} is not in the colour mapping (known: {known}).")
        lut[k] = keyed[u]
    return lut[inv].reshape(code.shape)


def read_mask_png(path: Path, where: str, color_map: dict | None, palette_colors: bool = False) -> np.ndarray:
    """An index PNG (mode L / P), or an RGB PNG mapped through ``color_map`` ({(r, g, b): index}).

    ``palette_colors``: a palette PNG (mode P / PA) is read by its *colours* through ``color_map``
    too (a colour mask saved as a palette PNG); by default its indices are the classes (VOC)."""
    from PIL import Image

    colour_modes = ("RGB", "RGBA") + (("P", "PA") if palette_colors else ())
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in colour_modes and color_map is not None:
                return colors_to_index(np.asarray(im.convert("RGB")), color_map, where)
    except (OSError, ValueError) as e:
        raise FormatError(f"{where}: not a readable PNG ({e}).") from None
    return read_label_png(path, where)


#: Class 0 with one of these names is "background": the class of pixels no polygon / annotation
#: covers. A subset of :data:`annotations.store.BACKGROUND_NAMES` (the names the app treats as
#: background), narrower on purpose: a class 0 named "other" or "clutter" keeps its polygons.
INSTANCE_BACKGROUND_NAMES = ("background", "_background_", "bg")


def background_class(project, mode: str) -> int | None:
    """Index of the class left out of instance-style formats (COCO, YOLO), or None.

    ``mode``: ``auto`` (class 0 if it is named background), ``skip`` (class 0) or ``include``.
    """
    if mode == "include" or project.num_classes == 0:
        return None
    if mode == "skip":
        return 0
    return 0 if project.class_names[0].strip().lower() in INSTANCE_BACKGROUND_NAMES else None
