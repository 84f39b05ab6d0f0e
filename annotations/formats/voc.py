"""The Pascal VOC segmentation layout.

Export::

    JPEGImages/<stem>.jpg               every image as the tool shows it (JPEG originals copied, or
                                        re-encoded upright when their EXIF orientation turns them;
                                        others encoded as JPEG; option jpeg_quality=95; images=none
                                        skips them)
    SegmentationClass/<stem>.png        palette PNG: pixel value = class index, 255 = void (drawn
                                        (224, 224, 192)); colours = the class colours
    ImageSets/Segmentation/<set>.txt    one stem a line: each image set, and trainval.txt (all masked
                                        images) unless a set of that name exists
    labelmap.txt                        "name:r,g,b::" per class (CVAT / Datumaro)
    labels.json, manifest.json

Ignore regions are VOC's own void (255): carried exactly. Import reads the same layout (the
folder itself or a ``VOC*`` / ``VOCdevkit/VOC*`` folder below it), classes from labels.json /
labelmap.txt or else the 21 standard VOC classes, palette or index PNGs (RGB masks are mapped
through the labelmap colours), image sets from ``manifest.json`` if there is one, else from
``ImageSets/Segmentation``. ``--option images=segmented`` imports only images that have a mask.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..errors import AnnotationError
from ..store import parse_color, sanitize_name
from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_EXPORT_OPTIONS,
    COMMON_IMPORT_OPTIONS,
    IGNORE,
    VOID_COLOR,
    FormatError,
    ImportItem,
    apply_import,
    check_options,
    dataset_root,
    export_items,
    finish_options,
    find_image_files,
    labelmap_txt,
    manifest_sets,
    opt_choice,
    opt_int,
    palette,
    png_files,
    read_class_list,
    read_mask_png,
    upright_note,
    write_image_file,
    write_index_and_color,
    write_labels,
    write_manifest,
)

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """The standard VOC colour map (bit-interleaved)."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def write_jpeg(project, item, dest: Path, quality: int) -> None:
    """``dest``: a JPEG original as :func:`._common.write_image_file` writes it (re-encoded upright
    at ``quality`` when its EXIF orientation turns it, ``item.upright``), another image encoded as
    JPEG as the tool shows it (:meth:`Project.load_image`: upright too)."""
    if item.ext in (".jpg", ".jpeg"):
        item.upright = write_image_file(project, item.info, dest, quality)
        return
    arr = project.load_image(item.info.id)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    dest.write_bytes(buf.getvalue())


@register_format
class VocFormat(Format):
    name = "voc"
    description = "Pascal VOC: JPEGImages, SegmentationClass palette PNGs (255 = void), ImageSets/Segmentation"
    can_import = True
    export_options = {**COMMON_EXPORT_OPTIONS, "jpeg_quality": "JPEG quality for non-JPEG images (default 95)"}
    import_options = {**COMMON_IMPORT_OPTIONS,
                      "images": "all (default) or segmented: import only the images that have a mask"}

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        ex = check_options(self.name, options.extra, self.export_options)
        copy = opt_choice(ex, "images", ("copy", "none"), "copy") == "copy"
        quality = opt_int(ex, "jpeg_quality", 95, 1, 100)
        res = ExportResult(out_dir)
        pal = palette(project)
        items = []
        jpg = out_dir / "JPEGImages"
        jpg.mkdir()
        encoded = 0  # images that were not JPEG: re-encoded, so their pixels change a little
        for it in export_items(project, options):
            if copy:
                write_jpeg(project, it, jpg / f"{it.stem}.jpg", quality)
                res.images += 1
                encoded += it.ext not in (".jpg", ".jpeg")
            if it.mask is not None:
                write_index_and_color(project, it, None, out_dir / "SegmentationClass", pal)
                res.masks += 1
                it.mask = None
            items.append(it)
        sets_dir = out_dir / "ImageSets" / "Segmentation"
        sets_dir.mkdir(parents=True)
        masked = [it for it in items if it.mask_info is not None]
        written = set()
        stems = {it.info.id: it.stem for it in masked}
        for s in project.image_sets():
            fname = sanitize_name(s, "set")
            members = [stems[i] for i in project.image_set(s) if i in stems]
            (sets_dir / f"{fname}.txt").write_text("".join(f"{m}\n" for m in members))
            written.add(fname)
        if "trainval" not in written:
            (sets_dir / "trainval.txt").write_text("".join(f"{it.stem}\n" for it in masked))
        (out_dir / "labelmap.txt").write_text(labelmap_txt(project), encoding="utf-8")
        write_labels(project, out_dir)
        write_manifest(project, out_dir, self.name, options, items)
        if encoded:
            res.notes.append(f"note: {encoded} image(s) were not JPEG and were re-encoded as JPEG for JPEGImages/ "
                             f"(quality {quality}: their pixels change a little; the folder and png formats keep "
                             "the original files)")
        res.notes += upright_note(sum(it.upright for it in items), quality)
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as top:
            root = find_voc_root(top)
            opts = finish_options(options, root, self.import_options, self.name)
            which = opt_choice(opts, "images", ("all", "segmented"), "all")
            names, colors = read_class_list(root, fallback=(VOC_CLASSES, voc_colormap(len(VOC_CLASSES))),
                                            where=root.name)
            cmap = voc_color_map(names, colors, root.name)
            images = find_image_files(root / "JPEGImages")
            masks = {p.stem: p for p in png_files(root / "SegmentationClass")}
            stems = sorted(set(masks) | (set(images) if which == "all" else set()))
            items = []
            for stem in stems:
                ip, mp = images.get(stem), masks.get(stem)
                where = f"SegmentationClass/{stem}.png" if mp else f"JPEGImages/{ip.name}"
                items.append(ImportItem(name=ip.name if ip else f"{stem}.jpg", image_path=ip, where=where,
                                        mask=(lambda p=mp, w=where: read_mask_png(p, w, cmap)) if mp else None))
            sets = manifest_sets(opts)
            if sets is None:
                sd = root / "ImageSets" / "Segmentation"
                sets = {p.stem: [ln.strip() for ln in p.read_text().splitlines() if ln.strip()] for p in sorted(sd.glob("*.txt"))} if sd.is_dir() else None
            return apply_import(project, items, names, colors=colors, source=f"import:voc:{root.name}",
                                options=opts, image_sets=sets, where=root.name)


def voc_color_map(names: list[str], colors: list | None, where: str) -> dict[tuple[int, int, int], int]:
    """``{(r, g, b): class index}`` for RGB masks, from the class colours (``#rrggbb`` strings of
    labels.json or ``(r, g, b)`` of labelmap.txt), plus VOC's void colour -> 255."""
    cmap = {}
    for k, c in enumerate(colors or []):
        if c is None:
            continue
        try:
            cmap[parse_color(c)] = k
        except AnnotationError:
            raise FormatError(f"{where}: class '{names[k]}' has colour {c!r}, not #rrggbb or r,g,b.") from None
    cmap.setdefault(VOID_COLOR, IGNORE)
    return cmap


def find_voc_root(top: Path) -> Path:
    if (top / "SegmentationClass").is_dir() or (top / "JPEGImages").is_dir():
        return top
    for pattern in ("VOC*", "VOCdevkit/VOC*", "*"):
        for d in sorted(top.glob(pattern)):
            if d.is_dir() and (d / "SegmentationClass").is_dir():
                return d
    raise FormatError(f"{top.name}: not a VOC dataset (no SegmentationClass/ or JPEGImages/ folder).")
