"""NIfTI volumes (``.nii`` / ``.nii.gz``: cardiac MRI, CT) in, label volumes out.

Import (``import PROJECT PATH --format nifti``; a ``.nii`` / ``.nii.gz`` file, a folder of them or
a nifti export needs no ``--format``): ``PATH`` is one volume or a folder of volumes (the files
directly in it). Every volume becomes its slices along the third array axis, each a grey uint8 PNG
image ``<stem>_z<k:03d>.png`` (``stem``: the file name without ``.nii`` / ``.nii.gz``), all of them
in the image set ``<stem>``. A 2-D volume is one slice; a 4-D volume whose last axis has size 1 is
squeezed; another 4-D volume is refused (split its frames first), and so are voxels that are not
one real number each (RGB24, RGBA32, complex): one line naming the file.

* Orientation: slice ``k`` is ``vol[:, :, k].T``: image rows run along the second array axis,
  columns along the first (what ``nibabel`` / numpy users see with ``imshow(vol[:, :, k].T)``;
  no reorientation to RAS is made). The export inverts exactly this.
* Intensities: one window per volume (slices stay comparable), by default its 0.5 and 99.5
  percentiles, or ``--option window=LOW,HIGH`` (CT soft tissue: ``window=-160,240``); values
  below ``LOW`` are 0, above ``HIGH`` 255 (``inf`` too, ``NaN`` is ``LOW``).
* ``--option masks=PATH``: a label volume, or a folder of them matched by stem (``<stem>``, or
  ``<stem>_gt`` / ``_seg`` / ``_label`` / ``_mask`` as ACDC names them), of the image's shape;
  values are class indices of the project (255: unlabelled). In a folder of volumes, a file named
  so beside its image is that image's label volume (not an image; two for one image are
  refused). Stored as kind ``imported`` (``--option kind=``).
* A label volume's grid must be its image's (see :func:`_onto_grid`): an affine that describes
  the same grid with its axes flipped or swapped (re-saved in RAS by
  ``nibabel.as_closest_canonical``, MONAI's ``Orientationd``, ...) is reoriented to the image's
  voxel order, with a note; a label volume without orientation (qform and sform codes 0) is
  taken in its image's voxel order; any other grid is refused naming both files.
* What the export needs (source file, shape, affine, zooms, qform / sform and their codes, the
  window, the ordered ids of the slices) is kept in ``PROJECT/volumes/<stem>.json``.
* Importing a volume the project has (the record of its name, or of the ``<stem>_2``, ``<stem>_3``
  ... a same-named file of other voxels was added as, holding the same voxels and geometry): no
  image is added (label volumes given are stored onto its slices), but slices of it taken out with
  ``remove-image`` are put back (made with the recorded window; a note names them); the same
  voxels with another window are refused (the slices are already made). A volume of a name the
  project has but other voxels is added as a new volume ``<stem>_2``, with a note, as a same-named
  image of another picture is.

Export::

    labels/<stem>.nii.gz       per volume: the chosen mask of every slice stacked back (uint8, the
                               source's affine, zooms and qform / sform codes); a slice without a
                               mask is 0 (a note counts them)
    unlabelled/<stem>.nii.gz   only where a mask has unlabelled pixels (255): 1 there (they are 0
                               in labels/, with a note); an import of the export reads them back
    labels.json, manifest.json classes; kind and provenance of every slice's mask

An image that did not come from a volume is written as a one-slice label volume
``labels/<stem>.nii.gz`` (identity affine, same orientation) when it has a mask, with a note
(``--option others=skip`` leaves them out). ``ExportResult.images`` is 0 (no image file is
written: the volumes are the user's), ``masks`` counts the slices written with a mask.

Importing such an export (a folder or ``.zip`` whose ``manifest.json`` says ``nifti``; detected)
stores the label volumes, edited in 3D Slicer or ITK-SNAP say, back onto the slices they came from
(the images must be in the project); a slice that had no mask at export and is still all 0 is
skipped, and so, with a note, is a slice taken out of the project since (``remove-image``). A
label volume re-saved in another orientation is reoriented to the recorded grid, or refused, as
above.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .. import imageio
from ..schema import MASK_KINDS
from ..store import ImportSummary, _now, sanitize_name
from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_IMPORT_OPTIONS,
    IGNORE,
    DuplicateNameError,
    ExportItem,
    FormatError,
    ImportItem,
    LabelMerge,
    apply_import,
    check_options,
    dataset_root,
    export_mask,
    finish_options,
    is_junk_name,
    manifest_sets,
    opt_choice,
    read_class_list,
    selected_images,
    unique_stems,
    write_labels,
    write_manifest,
)

#: Where a project keeps what the export needs of each imported volume.
VOLUMES_DIR = "volumes"
#: Suffixes of a label volume's stem beside its image's (ACDC: ``patient001_frame01_gt``).
LABEL_SUFFIXES = ("_gt", "_seg", "_label", "_mask")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
PERCENTILES = (0.5, 99.5)
ORIENTATION = "slice k = vol[:, :, k].T (image rows along array axis 1, columns along axis 0)"


def _nib():
    try:
        import nibabel
    except ImportError:  # pragma: no cover - a dependency (requirements.txt)
        raise FormatError("the nifti format needs nibabel: python -m pip install nibabel") from None
    return nibabel


def is_nifti_name(name: str) -> bool:
    return str(name).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str) -> str:
    """The file name without ``.nii`` / ``.nii.gz`` (any case)."""
    base = os.path.basename(str(name))
    for suf in NIFTI_SUFFIXES:
        if base.lower().endswith(suf):
            return base[: -len(suf)]
    return base


def nifti_files(folder: Path) -> list[Path]:
    """The ``.nii`` / ``.nii.gz`` files directly in ``folder``, sorted, hidden files left out."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not is_junk_name(p.name)
                  and is_nifti_name(p.name))


def is_nifti_path(path: Path) -> bool:
    """A ``.nii`` / ``.nii.gz`` file, a folder holding some, or a nifti export (for the import's
    detection)."""
    path = Path(path)
    return is_nifti_name(path.name) if path.is_file() else bool(nifti_files(path)) or is_nifti_export(path)


def is_nifti_export(folder: Path) -> bool:
    """A folder written by ``export --format nifti``: its ``manifest.json`` says ``nifti`` (the label
    volumes are in ``labels/``, so :func:`nifti_files` finds none directly in it)."""
    man = Path(folder) / "manifest.json"
    if not man.is_file():
        return False
    try:
        data = json.loads(man.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == "nifti"


def label_base(stem: str) -> str | None:
    """The image stem a label volume's stem names (``patient001_frame01_gt`` ->
    ``patient001_frame01``; suffixes :data:`LABEL_SUFFIXES`, any case), or ``None``."""
    return next((stem[: -len(suf)] for suf in LABEL_SUFFIXES if stem.lower().endswith(suf) and len(stem) > len(suf)),
                None)


def label_pairs(names) -> dict[str, list[str]]:
    """``{image file name: [its label volume file names]}`` among the NIfTI file ``names`` of one
    place (a folder, one upload): a ``<stem>_gt`` / ``_seg`` / ``_label`` / ``_mask`` file whose
    ``<stem>`` (any case) is among them is that image's label volume, not an image. More than one
    for an image is for the caller to refuse (which one is meant is not known)."""
    by_stem = {nifti_stem(n).lower(): n for n in names}
    out: dict[str, list[str]] = {}
    for n in names:
        base = label_base(nifti_stem(n))
        if base is not None and base.lower() in by_stem and by_stem[base.lower()] != n:
            out.setdefault(by_stem[base.lower()], []).append(n)
    return out


# ----------------------------------------------------------------------------- reading
def _load(path: Path, what: str = "volume"):
    """``(image, data)``: the NIfTI image and its voxels (scaled by the header's slope / intercept);
    anything else, or a damaged file, is a :class:`FormatError` naming the file."""
    nib = _nib()
    if not is_nifti_name(path.name):
        raise FormatError(f"{path.name}: not a NIfTI file (.nii or .nii.gz); the nifti format reads NIfTI volumes.")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise FormatError(f"{path.name}: not a NIfTI-1 / NIfTI-2 file ({type(img).__name__}).")
        data = np.asanyarray(img.dataobj)
    except FormatError:
        raise
    except MemoryError:
        raise FormatError(f"{path.name}: the {what} does not fit in memory.") from None
    except Exception as e:  # nibabel, gzip and zlib raise many kinds for damaged files
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{path.name}: not a readable NIfTI file ({why}).") from None
    return img, data


def _dtype_name(img, data: np.ndarray) -> str:
    """The voxel type for a message: the NIfTI header's name (``RGB``, ``complex64`` ...)."""
    try:
        return str(img.header.get_value_label("datatype"))
    except Exception:  # noqa: BLE001 - only a name for a message
        return str(data.dtype)


def _check_real(img, data: np.ndarray, path: Path, what: str) -> None:
    """Voxels must be one real number each (integers, floats, booleans); RGB24 / RGBA32 colours and
    complex numbers are refused in one line naming the file."""
    if data.dtype.kind not in "iufb":
        kinds = "complex numbers" if data.dtype.kind == "c" else \
            "colours" if data.dtype.names else f"values of numpy type {data.dtype}"
        use = ("intensities; the nifti format reads grey volumes (one real number per voxel): convert it first "
               "(e.g. its magnitude, or one channel)") if what == "volume" else "class indices"
        raise FormatError(f"{path.name}: its voxels are of type {_dtype_name(img, data)} ({kinds}), not {use}.")


def _spatial(data: np.ndarray, path: Path) -> np.ndarray:
    """The voxels as 3-D ``(X, Y, Z)``: a 2-D volume is one slice, a 4-D one with a last axis of 1
    is squeezed; anything else is refused naming the file and its shape."""
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        return data[:, :, None]
    if data.ndim == 3:
        return data
    if data.ndim == 4:
        raise FormatError(f"{path.name}: a 4-D volume of shape {tuple(data.shape)} ({data.shape[3]} frames); import "
                          "one 3-D volume per frame (split the frames first, e.g. nibabel.funcs.four_to_three "
                          "or fslsplit).")
    raise FormatError(f"{path.name}: a {data.ndim}-D array of shape {tuple(data.shape)}; the nifti format reads 2-D "
                      "and 3-D volumes.")


def _labels(path: Path, shape: tuple | None = None, image: str = "", grid: tuple | None = None
            ) -> tuple[np.ndarray, str | None]:
    """``(labels, note)``: a label volume as 3-D uint8 (whole values 0..255), of ``shape`` when
    given; ``grid``: ``(affine, has orientation)`` of its image (the volume file, or the recorded
    geometry), to which it is put in voxel order by :func:`_onto_grid` (``note`` says when it was
    reoriented or taken without orientation)."""
    img, data = _load(path, "label volume")
    _check_real(img, data, path, "label volume")
    data = _spatial(data, path)
    note = None
    if grid is not None and (shape is None or sorted(data.shape) == sorted(shape)):  # else: the shape is refused
        data, note = _onto_grid(img, data, path, grid[0], grid[1], image)
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise FormatError(f"{path.name}: the label volume's shape {tuple(data.shape)} differs from the shape "
                          f"{tuple(shape)} of its image {image}.")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise FormatError(f"{path.name}: the label volume holds NaN or infinite values, not class indices.")
        if not np.array_equal(data, np.round(data)):
            bad = data[data != np.round(data)].flat[0]
            raise FormatError(f"{path.name}: label value {bad:g} is not a whole number (class indices are).")
    elif data.dtype.kind not in "iub":
        raise FormatError(f"{path.name}: labels of type {data.dtype} are not class indices.")
    if data.size and (data.min() < 0 or data.max() > 255):
        bad = data.min() if data.min() < 0 else data.max()
        raise FormatError(f"{path.name}: label value {bad:g} is outside 0..255 (class indices; 255 = unlabelled).")
    return data.astype(np.uint8), note


#: How far (in voxels of the image) a label volume's voxel centres may lie from its image's and
#: still be the same grid (float32 headers and quaternion qforms round a little).
GRID_TOLERANCE = 0.05


def _has_orientation(img) -> bool:
    """Whether a NIfTI header places its voxels in space (a qform or sform code above 0)."""
    hdr = img.header
    return int(hdr.get_qform(coded=True)[1]) > 0 or int(hdr.get_sform(coded=True)[1]) > 0


def _grid_gap(a: np.ndarray, b: np.ndarray, shape: tuple) -> float:
    """The largest distance between where affines ``a`` and ``b`` put a corner voxel of ``shape``,
    in voxels of ``b`` (its smallest voxel size); affine maps are linear, so the corners bound it."""
    corners = np.array(np.meshgrid(*[(0, max(int(n) - 1, 0)) for n in shape[:3]], indexing="ij")
                       ).reshape(3, -1).T.astype(float)
    pa, pb = corners @ a[:3, :3].T + a[:3, 3], corners @ b[:3, :3].T + b[:3, 3]
    vox = float(np.min(np.linalg.norm(b[:3, :3], axis=0))) or 1.0
    return float(np.max(np.linalg.norm(pa - pb, axis=1))) / vox


def _onto_grid(img, data: np.ndarray, path: Path, affine, oriented: bool, image: str
               ) -> tuple[np.ndarray, str | None]:
    """The 3-D voxels ``data`` of the label volume ``img`` (the file ``path``) in the voxel order of
    its image's grid ``affine`` (``oriented``: the image has a qform or sform), and a note or
    ``None``.

    The rule: the label volume's voxel centres must be the image's (to :data:`GRID_TOLERANCE` of a
    voxel). The same affine: taken as it is. Another affine that describes the same grid with its
    array axes flipped or swapped (a tool that re-saves in RAS, e.g.
    ``nibabel.as_closest_canonical``): reoriented to the image's voxel order
    (``nibabel.orientations``), with a note. Either volume without orientation (qform and sform
    codes 0: no place in space to compare): taken in the image's voxel order, with a note when the
    label volume lacks it. Any other grid (another position, voxel size or field of view) is
    refused naming both files, as the masks would land on the wrong pixels."""
    affine = np.asarray(affine, float)
    own = np.asarray(img.affine, float)
    if not oriented or not _has_orientation(img):
        if oriented and not np.allclose(own, affine, atol=1e-4):
            return data, (f"note: {path.name} has no orientation (qform and sform codes 0): taken in the voxel order "
                          f"of its image {image}")
        return data, None
    if _grid_gap(own, affine, data.shape) <= GRID_TOLERANCE:
        return data, None
    from nibabel.orientations import apply_orientation, aff2axcodes, inv_ornt_aff, io_orientation, ornt_transform

    try:
        change = ornt_transform(io_orientation(own), io_orientation(affine))
        moved = apply_orientation(data, change)
        fits = _grid_gap(own @ inv_ornt_aff(change, data.shape), affine, moved.shape) <= GRID_TOLERANCE
    except Exception:  # noqa: BLE001 - a degenerate affine (a zero axis): no orientation to match
        fits = False
    if not fits:
        def desc(a):
            size = "x".join(f"{v:g}" for v in np.linalg.norm(a[:3, :3], axis=0).round(3))
            return f"voxels {size} mm, voxel 0,0,0 at {', '.join(f'{v:g}' for v in a[:3, 3].round(2))}"

        raise FormatError(f"{path.name}: its grid (affine: {desc(own)}) is not the grid of its image {image} "
                          f"({desc(affine)}), even with its axes flipped or swapped; resample it onto the image first "
                          "(e.g. nibabel.processing.resample_from_to with order=0). Nothing was imported.")
    codes = "".join(str(c) for c in aff2axcodes(own)), "".join(str(c) for c in aff2axcodes(affine))
    return np.ascontiguousarray(moved), (f"note: {path.name} is stored in {codes[0]} orientation, its image {image} in "
                                         f"{codes[1]}: reoriented to the image's voxel order")


def _window(data: np.ndarray, spec) -> tuple[float, float, str]:
    """``(low, high, how)``: ``spec`` ``"LOW,HIGH"``, or the volume's 0.5 / 99.5 percentiles."""
    if spec is not None and str(spec).strip().lower() not in ("", "auto"):
        try:
            lo, hi = (float(v) for v in str(spec).split(","))
        except ValueError:
            lo = hi = float("nan")
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise FormatError(f"option window={spec}: use LOW,HIGH with LOW < HIGH (e.g. window=-160,240 for CT "
                              "soft tissue), or leave it out for the 0.5-99.5 percentile window of each volume.")
        return lo, hi, "option"
    vals = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if vals.size == 0:
        return 0.0, 1.0, "percentile"
    lo, hi = (float(v) for v in np.percentile(vals, PERCENTILES))
    if hi <= lo:  # most voxels alike: the full range instead
        lo, hi = float(vals.min()), float(vals.max())
    return lo, hi, "percentile"


def _to_uint8(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Intensities to 0..255 by the window ``lo``, ``hi``: clipped to it first (``inf`` to an end,
    ``NaN`` to ``lo``), so no value overflows float32 on the way."""
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    ft = np.float64 if data.dtype.kind == "f" and data.dtype.itemsize > 4 else np.float32  # 1e300 stays finite
    x = np.clip(data.astype(ft), ft(lo), ft(hi))
    x = np.nan_to_num(x, nan=lo) if data.dtype.kind == "f" else x
    out = (x - ft(lo)) * ft(255.0 / (hi - lo)) + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)


def _slices(vol: np.ndarray):
    """The display images of a 3-D array, in order (see :data:`ORIENTATION`)."""
    return [np.ascontiguousarray(vol[:, :, k].T) for k in range(vol.shape[2])]


def _unslice(slices: list[np.ndarray]) -> np.ndarray:
    """The inverse of :func:`_slices`."""
    return np.stack([s.T for s in slices], axis=2)


# ----------------------------------------------------------------------------- volume records
def volume_records(project) -> dict[str, dict]:
    """``{stem: record}`` of the volumes imported into ``project`` (``volumes/<stem>.json``)."""
    out = {}
    folder = project.root / VOLUMES_DIR
    if folder.is_dir():
        for p in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise FormatError(f"{VOLUMES_DIR}/{p.name}: the project's record of a NIfTI volume cannot be read "
                                  f"({e}).") from None
            out[p.stem] = rec
    return out


def _header_record(img, shape: tuple) -> dict:
    hdr = img.header
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    units = hdr.get_xyzt_units()
    return {"affine": np.asarray(img.affine, float).tolist(),
            "zooms": [float(z) for z in hdr.get_zooms()[: len(shape)]],
            "qform": None if qform is None else np.asarray(qform, float).tolist(), "qform_code": int(qcode),
            "sform": None if sform is None else np.asarray(sform, float).tolist(), "sform_code": int(scode),
            "xyzt_units": list(units)}


def _write_volume(path: Path, vol: np.ndarray, rec: dict | None) -> None:
    """``vol`` (3-D uint8) as a NIfTI-1 file with the geometry of ``rec`` (identity without one)."""
    nib = _nib()
    if rec is None:
        img = nib.Nifti1Image(vol, np.eye(4))
    else:
        img = nib.Nifti1Image(vol.reshape(rec["shape"]), np.asarray(rec["affine"], float))
        img.set_qform(None if rec.get("qform") is None else np.asarray(rec["qform"], float), rec.get("qform_code", 0))
        img.set_sform(None if rec.get("sform") is None else np.asarray(rec["sform"], float), rec.get("sform_code", 0))
        zooms = list(rec.get("zooms") or [])
        if len(zooms) == len(rec["shape"]):
            img.header.set_zooms(zooms)
        if rec.get("xyzt_units"):
            img.header.set_xyzt_units(*rec["xyzt_units"])
    img.set_data_dtype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


# ----------------------------------------------------------------------------- import of volumes
class _Volume:
    """One volume to import, read and checked before anything is written."""

    def __init__(self, path: Path, stem: str, window, masks: Path | None, n_cls: int, classes: str):
        self.path, self.stem, self.masks = path, stem, masks
        img, data = _load(path)
        _check_real(img, data, path, "volume")
        self.vol = vol = _spatial(data, path)
        self.shape = tuple(int(s) for s in (data.shape[:2] if data.ndim == 2 else vol.shape))
        self.lo, self.hi, self.how = _window(vol, window)
        self.images = [imageio.encode_image_png(s) for s in _slices(_to_uint8(vol, self.lo, self.hi))]
        self.geometry = _header_record(img, self.shape)
        self.sha = hashlib.sha256(np.ascontiguousarray(vol).tobytes() + repr(vol.shape).encode()).hexdigest()
        self.labels, self.label_note = None, None
        if masks is not None:
            lab, self.label_note = _labels(masks, vol.shape, path.name, (img.affine, _has_orientation(img)))
            vals = np.nonzero(np.bincount(lab.ravel(), minlength=256))[0]
            bad = [int(v) for v in vals if v >= n_cls and v != IGNORE]
            if bad:
                raise FormatError(f"{masks.name}: label value {bad[0]} is not a class of this project (classes: "
                                  f"{classes}); add the class first (python -m segmenter classes PROJECT add NAME). "
                                  "Nothing was imported.")
            self.labels = _slices(lab)

    def same_as(self, rec: dict) -> bool:
        return (rec.get("data_sha256") == self.sha and tuple(rec.get("shape", ())) == self.shape
                and np.allclose(rec.get("affine", np.zeros((4, 4))), self.geometry["affine"]))

    def slice_png(self, k: int, lo: float, hi: float) -> bytes:
        """Slice ``k`` as a PNG made with the window ``lo``, ``hi`` (a removed slice put back)."""
        return imageio.encode_image_png(_slices(_to_uint8(self.vol[:, :, k : k + 1], lo, hi))[0])

    def record(self, stem: str, infos: list) -> dict:
        return {"stem": stem, "source": self.path.name, "labels": self.masks.name if self.masks else None,
                "shape": list(self.shape), **self.geometry, "data_sha256": self.sha, "slice_axis": 2,
                "orientation": ORIENTATION, "window": [self.lo, self.hi],
                "window_from": "option" if self.how == "option" else f"percentiles {PERCENTILES[0]}-{PERCENTILES[1]}",
                "image_ids": [i.id for i in infos], "image_names": [i.name for i in infos], "imported": _now()}


def _sources(root: Path) -> tuple[list[Path], dict[str, Path]]:
    """The image volumes of ``root`` (a file or a folder) and ``{image stem: label volume}`` of the
    label volumes named ``<stem>_gt`` etc. beside their image in a folder."""
    if root.is_file():
        if not is_nifti_name(root.name):
            raise FormatError(f"{root.name}: not a NIfTI file (.nii or .nii.gz); the nifti format reads NIfTI volumes "
                              "or a folder of them.")
        return [root], {}
    files = nifti_files(root)
    if not files:
        raise FormatError(f"{root.name}: no .nii or .nii.gz files in the folder.")
    by_name = {p.name: p for p in files}
    labels = {}
    for image, found in label_pairs(list(by_name)).items():
        if len(found) > 1:
            raise FormatError(f"{root.name}: {' and '.join(found)} are both named as the label volume of {image}; "
                              "keep one of them beside it (or give one with --option masks=).")
        labels[nifti_stem(image)] = by_name[found[0]]
    return [p for p in files if p not in labels.values()], labels


def _mask_sources(spec, volumes: list[Path]) -> dict[str, Path]:
    """``{image stem: label volume}`` from ``--option masks=``: a file (for a single volume) or a
    folder of ``<stem>`` / ``<stem>_gt`` ... volumes."""
    p = Path(str(spec)).expanduser()
    if not p.exists():
        raise FormatError(f"option masks={spec}: no such file or folder.")
    if p.is_file():
        if len(volumes) != 1:
            raise FormatError(f"option masks={spec}: one label volume for {len(volumes)} volumes; give a folder of "
                              "label volumes named like the images (<stem>.nii.gz or <stem>_gt.nii.gz).")
        return {nifti_stem(volumes[0].name): p}
    by_stem = {nifti_stem(f.name).lower(): f for f in nifti_files(p)}
    out = {}
    for v in volumes:
        s = nifti_stem(v.name)
        for cand in [s] + [s + suf for suf in LABEL_SUFFIXES]:
            if cand.lower() in by_stem and by_stem[cand.lower()].resolve() != v.resolve():
                out[s] = by_stem[cand.lower()]
                break
    return out


def _recorded(vol: _Volume, records: dict[str, dict]) -> tuple[str, dict] | None:
    """``(stem, record)`` of the volume ``vol`` when the project holds it already: a record of the
    same voxels and geometry (:meth:`_Volume.same_as`) named ``vol.stem``, or named ``<stem>_2``,
    ``<stem>_3`` ... from a file of ``vol``'s name (a same-named volume added under a new name,
    see :func:`_free_stem`). A file of another name with the same voxels is not it (renaming the
    file is how a volume is imported twice, e.g. with another window)."""
    low = vol.stem.lower()
    renamed = []
    for stem, rec in records.items():
        if stem.lower() == low:
            if vol.same_as(rec):
                return stem, rec
        elif (stem.lower().startswith(low + "_") and stem[len(low) + 1 :].isdigit()
              and sanitize_name(nifti_stem(str(rec.get("source") or "")), "volume").lower() == low):
            renamed.append((stem, rec))
    return next(((stem, rec) for stem, rec in renamed if vol.same_as(rec)), None)


def _free_stem(stem: str, taken: set[str]) -> str:
    k, new = 2, stem
    while new.lower() in taken:
        new, k = f"{stem}_{k}", k + 1
    return new


def import_volumes(project, root: Path, opts: dict) -> ImportSummary:
    """Import the volumes of ``root`` (see the module's docstring): all read and checked, then
    written in one transaction (the records last), so a failure leaves the project unchanged."""
    import time

    t0 = time.perf_counter()
    if str(opts.get("kind", "")).strip().lower() == "manifest":
        raise FormatError("option kind=manifest applies to an import of a nifti export (with its manifest.json), "
                          "not to volumes.")
    kind = opt_choice(opts, "kind", MASK_KINDS, "imported")
    volumes, beside = _sources(root)
    masks = _mask_sources(opts["masks"], volumes) if opts.get("masks") else beside
    seen: dict[str, Path] = {}
    for v in volumes:
        key = sanitize_name(nifti_stem(v.name), "volume").lower()
        if key in seen:
            raise DuplicateNameError(f"{root.name}: '{seen[key].name}' and '{v.name}' are the same volume name; "
                                     "rename one of them.")
        seen[key] = v
    classes = ", ".join(f"{c.idx} {c.name}" for c in project.classes())
    read = [_Volume(v, sanitize_name(nifti_stem(v.name), "volume"), opts.get("window"),
                    masks.get(nifti_stem(v.name)), project.num_classes, classes) for v in volumes]

    records = volume_records(project)
    taken = {s.lower() for s in records}
    by_lower = {s.lower(): (s, r) for s, r in records.items()}
    plan = []  # (volume, stem to add it as, or None; the record it is already in, or None)
    summary = ImportSummary()
    for vol in read:
        if vol.label_note:
            summary.notes.append(vol.label_note)
        held = _recorded(vol, records)
        if held is not None:
            if vol.how == "option" and [vol.lo, vol.hi] != held[1].get("window"):
                lo, hi = held[1].get("window", ["?", "?"])
                raise FormatError(f"{vol.path.name}: the volume '{held[0]}' is already in the project, its slices "
                                  f"made with the window {lo:g},{hi:g}; they are not made again with "
                                  f"{vol.lo:g},{vol.hi:g} (to import it with this window as another volume, rename "
                                  "the file).")
            plan.append((vol, None, held))
            continue
        old = by_lower.get(vol.stem.lower())
        stem = vol.stem
        if old is not None:
            stem = _free_stem(vol.stem, taken)
            summary.notes.append(f"note: {vol.path.name} is another volume than the project's '{old[0]}' (same name, "
                                 f"other voxels or geometry); added as the new volume '{stem}'; '{old[0]}' is "
                                 "unchanged")
        taken.add(stem.lower())
        plan.append((vol, stem, None))

    written: list[tuple[Path, bytes | None]] = []  # record files written, with what they held before
    merge = LabelMerge()
    try:
        with project.transaction(bulk=True):
            for vol, stem, old in plan:
                if stem is None:
                    _onto_existing(project, vol, old, kind, merge, summary, written)
                    continue
                infos, renamed = [], []
                for k, data in enumerate(vol.images):
                    want = f"{stem}_z{k:03d}.png"
                    info = project.add_image(data, name=want, allow_same_content=True)
                    infos.append(info)
                    if info.name != want:
                        renamed.append(f"{want} -> {info.name}")
                    if vol.labels is not None:
                        project.save_mask(info.id, vol.labels[k], kind, source=f"import:nifti:{vol.masks.name}")
                        summary.masks += 1
                summary.added.extend(infos)
                project.add_to_set(stem, [i.id for i in infos])
                how = (f"window {vol.lo:g},{vol.hi:g}" + (" (percentiles 0.5-99.5)" if vol.how != "option" else ""))
                summary.notes.append(f"volume {vol.path.name}: {len(infos)} slice(s) {infos[0].name} .. "
                                     f"{infos[-1].name} in image set '{stem}', {how}"
                                     + (f", label volume {vol.masks.name}" if vol.masks else ""))
                if renamed:
                    summary.notes.append(f"note: {len(renamed)} slice(s) of {vol.path.name} got another name (an image "
                                         f"of the project had theirs): {', '.join(renamed[:3])}"
                                         + (" …" if len(renamed) > 3 else ""))
                path = project.root / VOLUMES_DIR / f"{stem}.json"
                written.append((path, path.read_bytes() if path.is_file() else None))
                imageio.atomic_write_bytes(path, (json.dumps(vol.record(stem, infos), indent=1) + "\n").encode())
    except BaseException:
        for path, before in written:
            try:
                path.unlink() if before is None else imageio.atomic_write_bytes(path, before)
            except OSError:
                pass
        raise
    if opts.get("masks") and len(masks) < len(volumes):
        missing = [v.name for v in volumes if nifti_stem(v.name) not in masks]
        summary.notes.append(f"note: no label volume in {opts['masks']} for {len(missing)} volume(s): "
                             f"{', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    summary.notes.extend(merge.notes())
    summary.seconds = time.perf_counter() - t0
    return summary


def _onto_existing(project, vol: _Volume, old: tuple[str, dict], kind: str, merge: LabelMerge, summary,
                   written: list) -> None:
    """A volume the project holds already: no image added, but slices of it removed from the
    project since (``remove-image``) are put back, made with the recorded window, under their
    names ``<stem>_z<k>.png`` and in its image set, and the record is rewritten with their new ids
    (its old version kept in ``written``, for the caller to restore should the import fail). A
    label volume given is stored onto every slice (merged onto those the project held)."""
    stem, rec = old
    have = set(project.image_ids())
    ids = [int(i) for i in rec.get("image_ids", [])]
    names = (list(rec.get("image_names") or []) + [None] * len(ids))[: len(ids)]
    lo, hi = (rec.get("window") or [vol.lo, vol.hi])[:2]
    source = f"import:nifti:{vol.masks.name}" if vol.masks else ""
    n, back = 0, []
    for k, iid in enumerate(ids):
        if iid in have:
            if vol.labels is not None:
                n += merge.mask(project, iid, vol.labels[k], kind, source)
            continue
        info = project.add_image(vol.slice_png(k, lo, hi), name=f"{stem}_z{k:03d}.png", allow_same_content=True)
        ids[k], names[k] = info.id, info.name
        back.append(info)
        if vol.labels is not None:
            project.save_mask(info.id, vol.labels[k], kind, source=source)
            n += 1
    summary.masks += n
    stored = f", {n} mask(s) stored onto its slices" if vol.labels is not None else ""
    if not back:
        summary.notes.append(f"note: the volume {vol.path.name} is already in the project as '{stem}' ({len(ids)} "
                             f"slice(s)); no image added{stored}")
        return
    summary.added.extend(back)
    project.add_to_set(stem, [i.id for i in back])
    path = project.root / VOLUMES_DIR / f"{stem}.json"
    written.append((path, path.read_bytes() if path.is_file() else None))
    new = {**rec, "image_ids": ids, "image_names": names, "restored": _now()}
    imageio.atomic_write_bytes(path, (json.dumps(new, indent=1) + "\n").encode())
    summary.notes.append(f"note: the volume {vol.path.name} is already in the project as '{stem}'; its "
                         f"{len(back)} slice(s) removed from the project were put back (window {lo:g},{hi:g}: "
                         f"{', '.join(i.name for i in back[:5])}" + (" …" if len(back) > 5 else "")
                         + f"){stored}")


# ----------------------------------------------------------------------------- import of an export
def import_export(project, root: Path, opts: dict) -> ImportSummary:
    """Label volumes of a nifti export (maybe edited elsewhere) back onto the slices they came from.

    A label volume is put onto the grid the project records for its volume (``volumes/<stem>.json``;
    a one-slice volume of another image: the identity the export wrote) by :func:`_onto_grid`:
    reoriented when a tool re-saved it in another orientation, refused when its grid is another.
    A slice whose image was removed from the project since (``remove-image``: the volume's record
    names it, the project no longer has it) is skipped with a note; re-importing the volume puts
    such slices back. A slice the project never held is left to :func:`apply_import` (refused)."""
    for key in ("masks", "window"):
        if opts.get(key):
            raise FormatError(f"option {key} does not apply to a nifti export ({root.name}: its labels/ are read "
                              "back onto the project's slices).")
    names, colors = read_class_list(root, where=root.name)
    man = opts["_manifest"]
    masked = set(man.get("masks") or {})
    records = volume_records(project)
    held = {i.name.lower() for i in project.images()} | {i.stem.lower() for i in project.images()}
    have = set(project.image_ids())
    removed = {str(n).lower() for rec in records.values()
               for i, n in zip(rec.get("image_ids", []), rec.get("image_names") or []) if n and int(i) not in have}
    items, notes, skipped = [], [], []
    entries = [(stem, e, False) for stem, e in (man.get("volumes") or {}).items()] \
        + [(stem, e, True) for stem, e in (man.get("others") or {}).items()]
    for stem, entry, other in entries:
        path = root / entry["file"]
        if not path.is_file():
            raise FormatError(f"{root.name}: {entry['file']} (listed in manifest.json) is missing.")
        rec = None if other else records.get(stem)
        if rec is not None and rec.get("affine") is not None:
            grid, what = (rec["affine"], bool(rec.get("qform_code") or rec.get("sform_code"))), \
                f"'{stem}' (volumes/{stem}.json)"
        elif other:
            grid, what = (np.eye(4), True), f"{(entry.get('slices') or [stem])[0]} (written with an identity affine)"
        else:  # another project's export: no grid recorded here to compare with
            grid, what = None, "recorded in manifest.json"
        shape = tuple(entry["shape"]) + (1,) * (3 - len(entry["shape"]))
        lab, note = _labels(path, shape, what, grid)
        if note:
            notes.append(note)
        unl = root / entry["unlabelled"] if entry.get("unlabelled") else None
        if unl is not None:
            ign, note = _labels(unl, lab.shape, what, grid)
            if note:
                notes.append(note)
            lab = np.where((ign > 0) & (lab == 0), IGNORE, lab).astype(np.uint8)
        for k, (name, sl) in enumerate(zip(entry["slices"], _slices(lab))):
            if name is None or (os.path.splitext(name)[0] not in masked and not sl.any()):
                continue  # removed from the project before the export; no mask at export and none drawn since
            if name.lower() not in held and os.path.splitext(name)[0].lower() not in held and name.lower() in removed:
                skipped.append(name)  # removed from the project since the export
                continue
            items.append(ImportItem(name=name, mask=sl, where=f"{entry['file']} slice {k}"))
    summary = apply_import(project, items, names, colors=colors, source=f"import:nifti:{root.name}", options=opts,
                           image_sets=manifest_sets(opts), where=root.name)
    if skipped:
        notes.append(f"note: {len(skipped)} slice(s) of the export were removed from the project since (remove-image); "
                     f"their labels were skipped ({', '.join(skipped[:5])}" + (" …" if len(skipped) > 5 else "")
                     + "); to get them back, import their volume again (its removed slices are put back), then "
                       "this export")
    summary.notes[:0] = notes
    return summary


# ----------------------------------------------------------------------------- the format
@register_format
class NiftiFormat(Format):
    name = "nifti"
    description = ("NIfTI volumes (.nii/.nii.gz): import slices them into images (one image set per volume, "
                   "label volumes as masks); export stacks the masks back into labels/<stem>.nii.gz")
    can_import = True
    carries_images = False  # the export writes label volumes only
    export_options = {"others": "volume (default): an image that did not come from a volume is written as a "
                                "one-slice label volume; skip: left out"}
    import_options = {
        "window": "LOW,HIGH intensity window to 0..255 (CT: -160,240); default each volume's 0.5-99.5 percentiles",
        "masks": "a label volume, or a folder of them named <stem> or <stem>_gt/_seg/_label/_mask, values = class "
                 "indices",
        **COMMON_IMPORT_OPTIONS,
    }

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        ex = check_options(self.name, options.extra, self.export_options)
        others = opt_choice(ex, "others", ("volume", "skip"), "volume")
        res = ExportResult(out_dir)
        images = selected_images(project, options)
        infos = {i.id: i for i in images}
        stems = dict(zip(infos, unique_stems(images)))
        files: dict[str, str] = {}  # lower-case label file stem -> what it is
        items: list[ExportItem] = []
        man_vols, man_others, written, blank, unlabelled = {}, {}, [], [], 0

        def claim(stem: str, what: str) -> None:
            if stem.lower() in files:
                raise DuplicateNameError(f"{files[stem.lower()]} and {what} would both be written as labels/"
                                         f"{stem}.nii.gz; rename the image (python -m segmenter rename-image PROJECT "
                                         "IMAGE NEW_NAME).")
            files[stem.lower()] = what

        def slice_mask(info, shape):
            """The slice's chosen mask (transposed back), or None; its ExportItem is kept."""
            it = ExportItem(info, stems[info.id])
            items.append(it)
            got = export_mask(project, info, options)
            if got is None:
                return None
            mask, it.mask_info = got
            if mask.shape != shape:
                raise FormatError(f"{info.name}: its mask is {mask.shape[1]}x{mask.shape[0]}, not the "
                                  f"{shape[1]}x{shape[0]} of its slice.")
            res.masks += 1
            return mask

        def write(stem: str, slices: list, rec) -> str | None:
            nonlocal unlabelled
            vol = _unslice(slices)
            ign = vol == IGNORE
            _write_volume(out_dir / "labels" / f"{stem}.nii.gz", np.where(ign, 0, vol).astype(np.uint8), rec)
            if not ign.any():
                return None
            unlabelled += int(ign.any(axis=(0, 1)).sum())
            _write_volume(out_dir / "unlabelled" / f"{stem}.nii.gz", ign.astype(np.uint8), rec)
            return f"unlabelled/{stem}.nii.gz"

        in_volume: set[int] = set()
        for vstem, rec in volume_records(project).items():
            ids = [int(i) for i in rec.get("image_ids", [])]
            in_volume.update(ids)
            if not any(i in infos for i in ids):
                continue  # not selected, or every slice removed from the project
            claim(vstem, f"the volume '{vstem}'")
            x, y = int(rec["shape"][0]), int(rec["shape"][1])
            slices, names, missing = [], [], 0
            for iid in ids:
                info = infos.get(iid)
                mask = slice_mask(info, (y, x)) if info is not None else None
                missing += mask is None
                slices.append(np.zeros((y, x), np.uint8) if mask is None else mask)
                names.append(info.name if info is not None else None)
            if missing:
                blank.append(f"{vstem} ({missing} of {len(ids)})")
            man_vols[vstem] = {"file": f"labels/{vstem}.nii.gz", "shape": rec["shape"], "slices": names,
                               "source": rec.get("source"), "unlabelled": write(vstem, slices, rec)}
            written.append(f"{vstem} ({len(ids)} slice(s))")
        flat = [i for i in images if i.id not in in_volume]
        for info in flat if others == "volume" else []:
            stem = stems[info.id]
            mask = slice_mask(info, (info.height, info.width))
            if mask is None:
                continue
            claim(stem, f"the image {info.name}")
            man_others[stem] = {"file": f"labels/{stem}.nii.gz", "shape": [info.width, info.height, 1],
                                "slices": [info.name], "unlabelled": write(stem, [mask], None)}
        write_labels(project, out_dir)
        write_manifest(project, out_dir, self.name, options, items, volumes=man_vols, others=man_others,
                       orientation=ORIENTATION)
        if written:
            res.notes.append(f"wrote {len(written)} label volume(s) to labels/: {', '.join(written[:5])}"
                             + (" …" if len(written) > 5 else ""))
        if blank:
            res.notes.append(f"note: slices without a mask were written as 0: {', '.join(blank[:5])}"
                             + (" …" if len(blank) > 5 else ""))
        if unlabelled:
            res.notes.append(f"note: {unlabelled} slice(s) have unlabelled pixels (255): written as 0 in labels/ and "
                             "marked 1 in unlabelled/<stem>.nii.gz (an import of this export reads them back)")
        if flat:
            res.notes.append(f"note: {len(flat)} image(s) did not come from a NIfTI volume: "
                             + ("left out (others=skip)" if others == "skip" else
                                f"{len(man_others)} with a mask written as one-slice label volumes "
                                "labels/<stem>.nii.gz (identity affine; --option others=skip leaves them out)"))
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            opts = finish_options(options, root, self.import_options, self.name)
            if root.is_dir() and (opts["_manifest"] or {}).get("format") == self.name:
                return import_export(project, root, opts)
            return import_volumes(project, root, opts)
