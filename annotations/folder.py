"""Read-only access to a dataset in the folder layout (see ../shared/datasets/README.md).

::

    <dataset>/
      meta.json                  {"name", "classes": [...], "ignore_index": 255, ...}
      images/<id>.png|.jpg       RGB or grayscale
      masks/<id>.png             uint8 class index, 255 = ignore
      scribbles/<set>/<id>.png   uint8 class index, 255 = not scribbled
      splits/<split>.txt         one <id> a line

This is the reader that benchmarks and the project import share. It never writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AnnotationError, LabelMapError
from .imageio import IMAGE_EXTENSIONS, read_image, read_label_map


@dataclass
class FolderDataset:
    root: Path
    name: str
    classes: list[str]
    ignore_index: int = 255
    image_paths: dict[str, Path] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    #: ``(file, reason)`` for image files left out (e.g. a second file of the same stem).
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: split name -> the ids it lists that have no image (filled by :meth:`split`).
    missing: dict[str, list[str]] = field(default_factory=dict)
    _stored: dict[str, bool] = field(default_factory=dict, repr=False)  # :meth:`labels_fit_stored`
    _told_upright: bool = field(default=False, repr=False)

    @classmethod
    def open(cls, root: str | Path) -> "FolderDataset":
        """Open a folder dataset. Raises :class:`AnnotationError` naming what is missing."""
        root = Path(root)
        meta_path = root / "meta.json"
        if not root.is_dir():
            raise AnnotationError(f"{root}: no such folder.")
        if not meta_path.is_file():
            raise AnnotationError(f"{root}: not a folder dataset (no meta.json).")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as e:
            raise AnnotationError(f"{meta_path}: cannot read meta.json ({e}).") from None
        if not isinstance(meta, dict):
            raise AnnotationError(f"{meta_path}: meta.json must be a JSON object ({{\"classes\": [...], ...}}), "
                                  f"not a {type(meta).__name__}.")
        classes = meta.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise AnnotationError(f"{meta_path}: 'classes' must be a non-empty list of names.")
        if len(classes) > 255:
            raise AnnotationError(f"{meta_path}: at most 255 classes are supported, found {len(classes)}.")
        ignore_index = meta.get("ignore_index", 255)
        if isinstance(ignore_index, float) and ignore_index.is_integer():
            ignore_index = int(ignore_index)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= 255:
            raise AnnotationError(f"{meta_path}: 'ignore_index' must be a whole number 0..255 (the label value "
                                  f"that means 'ignore'), not {json.dumps(ignore_index)}.")
        images: dict[str, Path] = {}
        skipped = []
        img_dir = root / "images"
        if img_dir.is_dir():
            for p in sorted(img_dir.iterdir()):
                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
                    if p.stem in images:  # masks and scribbles are paired by stem: only one can be
                        skipped.append((f"images/{p.name}", f"same name stem '{p.stem}' as images/"
                                        f"{images[p.stem].name} (masks and scribbles are paired by stem, so only "
                                        f"images/{images[p.stem].name} is imported); rename one of them."))
                        continue
                    images[p.stem] = p
        return cls(root=root, name=str(meta.get("name", root.name)), classes=list(classes),
                   ignore_index=ignore_index, image_paths=images, meta=meta, skipped=skipped)

    @property
    def ids(self) -> list[str]:
        return list(self.image_paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image(self, image_id: str) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` uint8: turned upright by its EXIF orientation, as viewers
        show it, unless its labels fit the pixels as stored (:meth:`labels_fit_stored`)."""
        path = self.image_paths[image_id]
        return read_image(path, upright=not self.labels_fit_stored(image_id))

    def labels_fit_stored(self, image_id: str) -> bool:
        """Whether the image's mask and strokes were drawn on its pixels as stored, not as its EXIF
        orientation turns them: a phone photo turned by 90 degrees whose mask has the stored width
        and height (what PIL, torchvision and many converters see). Orientations that keep the
        size (180 degrees, mirrors) cannot be told apart: they are read upright, said once on stderr."""
        got = self._stored.get(image_id)
        if got is not None:
            return got
        from PIL import Image

        from .imageio import SWAPPING_ORIENTATIONS, exif_orientation

        path = self.image_paths[image_id]
        orient = exif_orientation(path)
        got = False
        if orient in SWAPPING_ORIENTATIONS:
            labels = [self.mask_path(image_id)] + [self.scribble_path(s, image_id) for s in self.scribble_sets()]
            try:
                with Image.open(path) as im:
                    stored = im.size
                sizes = set()
                for lp in labels:
                    if lp.is_file():
                        with Image.open(lp) as lm:
                            sizes.add(lm.size)
                got = sizes == {stored}
            except OSError:
                got = False
        elif orient != 1 and not self._told_upright:
            import sys

            self._told_upright = True
            print(f"note: {self.name}: images/{path.name} (and any other image with an EXIF orientation that keeps "
                  "its size: 180 degrees or a mirror) is read turned upright, as viewers show it; its mask and "
                  "strokes are taken to fit that", file=sys.stderr)
        self._stored[image_id] = got
        return got

    def mask_path(self, image_id: str) -> Path:
        return _png(self.root / "masks", image_id)

    def has_mask(self, image_id: str) -> bool:
        return self.mask_path(image_id).is_file()

    def mask(self, image_id: str) -> np.ndarray:
        """``(H, W)`` uint8 class index, 255 = ignore (meta.json's ``ignore_index`` is mapped to 255).

        A value that is neither a class nor the ignore value is a :class:`LabelMapError` naming the
        file (a metric would otherwise leave those pixels out without a word)."""
        return self._label_map(self.mask_path(image_id), "mask")

    def image_and_mask(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`image` and :meth:`mask` of ``image_id``; a mask of another size than its image is a
        :class:`LabelMapError` naming both files."""
        image = self.image(image_id)
        return image, self._label_map(self.mask_path(image_id), "mask", image.shape[:2])

    def _label_map(self, path: Path, what: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        arr = read_label_map(path)
        rel = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        if shape is not None and arr.shape != tuple(shape):
            raise LabelMapError(
                f"{self.name}/{rel}: the {what} is {arr.shape[1]}x{arr.shape[0]} px but its image is "
                f"{shape[1]}x{shape[0]}; it must have the image's size.")
        if self.ignore_index != 255:
            arr = np.where(arr == self.ignore_index, 255, arr).astype(np.uint8)
        bad = np.unique(arr[(arr >= self.num_classes) & (arr != 255)])
        if bad.size:
            raise LabelMapError(
                f"{self.name}/{rel}: the {what} uses value {', '.join(map(str, bad[:5].tolist()))}, but the dataset "
                f"has {self.num_classes} classes (0..{self.num_classes - 1}) and the ignore value "
                f"{self.ignore_index} (meta.json's ignore_index).")
        return arr

    def scribble_sets(self) -> list[str]:
        d = self.root / "scribbles"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def scribble_path(self, set_name: str, image_id: str) -> Path:
        return _png(self.root / "scribbles" / set_name, image_id)

    def scribbles(self, set_name: str, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """``(H, W)`` uint8 class index, 255 = not scribbled; ``None`` if the image has none. With
        ``shape`` (the image's ``(H, W)``), a map of another size is a :class:`LabelMapError`."""
        p = self.scribble_path(set_name, image_id)
        return self._label_map(p, "scribble map", shape) if p.is_file() else None

    def splits(self) -> list[str]:
        d = self.root / "splits"
        return sorted(p.stem for p in d.glob("*.txt")) if d.is_dir() else []

    def split(self, name: str | None) -> list[str]:
        """Ids of a split (``None`` = every image), in file order, keeping only ids with an image."""
        if name is None:
            return self.ids
        p = self.root / "splits" / f"{name}.txt"
        if not p.is_file():
            known = ", ".join(self.splits()) or "none"
            raise AnnotationError(f"{self.name}: no split named '{name}' (known splits: {known}).")
        ids = [self._split_id(ln.strip()) for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
        missing = [i for i in ids if i not in self.image_paths]
        if missing:
            self.missing[name] = missing
            if len(missing) == len(ids) and self.image_paths:
                raise AnnotationError(
                    f"{self.name}: none of the {len(ids)} ids in splits/{name}.txt names an image in images/ (e.g. "
                    f"'{missing[0]}' against '{next(iter(self.image_paths))}'); a split lists image file names without "
                    "their extension, one per line.")
        return [i for i in ids if i in self.image_paths]

    def _split_id(self, entry: str) -> str:
        """A split line as an image id: ``images/x.png`` and ``x.png`` name the image ``x`` too."""
        if entry in self.image_paths:
            return entry
        name = entry.replace("\\", "/").rsplit("/", 1)[-1]
        stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name
        if stem in self.image_paths:
            return stem
        # one name in two Unicode forms ("é" as one code point, or "e" + accent as macOS writes names)
        import unicodedata

        nfc = {unicodedata.normalize("NFC", k): k for k in self.image_paths}
        return nfc.get(unicodedata.normalize("NFC", stem), entry)

    def splits_of(self, names: str | None) -> list[str]:
        """Ids of one split or several joined with '+' or ','; ``None`` = every image."""
        if names is None:
            return self.ids
        out: list[str] = []
        seen = set()
        for n in names.replace(",", "+").split("+"):
            for i in self.split(n.strip()):
                if i not in seen:
                    seen.add(i)
                    out.append(i)
        return out


def _png(folder: Path, image_id: str) -> Path:
    """``folder/<id>.png``, or ``<id>.PNG`` when only that exists (as Windows tools write it)."""
    p = folder / f"{image_id}.png"
    if not p.is_file():
        upper = folder / f"{image_id}.PNG"
        if upper.is_file():
            return upper
    return p
