"""Index PNGs plus colour (palette) PNGs with a label map: the plainest mask format.

Export::

    images/<stem>.<ext>     the original image files (upright when EXIF-rotated; images=none skips them)
    masks/<stem>.png        (H, W) uint8 index map, mode L: class index, 255 = ignore
    color/<stem>.png        the same indices as a palette PNG coloured with the class colours
                            (255 drawn as (224, 224, 192)); reading it as an index map gives masks/
    labels.json             [{"index", "name", "color"}] for every class
    labelmap.txt            the same as CVAT / Datumaro "name:r,g,b::" lines
    manifest.json           kind and provenance of every mask, image sets

Import reads ``labels.json`` (or ``labelmap.txt``), ``masks/`` (or ``color/`` if there is no
``masks/``) and ``images/``; images the project lacks are added, matched by stem.
"""
from __future__ import annotations

from pathlib import Path

from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_EXPORT_OPTIONS,
    COMMON_IMPORT_OPTIONS,
    apply_import,
    check_options,
    copy_image,
    dataset_root,
    export_items,
    finish_options,
    items_from_folders,
    labelmap_txt,
    manifest_sets,
    palette,
    read_class_list,
    upright_note,
    write_index_and_color,
    write_labels,
    write_manifest,
)


@register_format
class PngFormat(Format):
    name = "png"
    description = "index PNGs (masks/) + palette PNGs (color/) + labels.json / labelmap.txt"
    can_import = True
    export_options = dict(COMMON_EXPORT_OPTIONS)
    import_options = dict(COMMON_IMPORT_OPTIONS)

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        check_options(self.name, options.extra, self.export_options)
        res = ExportResult(out_dir)
        pal = palette(project)
        items = []
        for it in export_items(project, options):
            if copy_image(project, it, out_dir / "images", options):
                res.images += 1
            if it.mask is not None:
                write_index_and_color(project, it, out_dir / "masks", out_dir / "color", pal)
                res.masks += 1
            items.append(it)
        write_labels(project, out_dir)
        (out_dir / "labelmap.txt").write_text(labelmap_txt(project), encoding="utf-8")
        write_manifest(project, out_dir, self.name, options, items)
        res.notes += upright_note(sum(it.upright for it in items))
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            opts = finish_options(options, root, self.import_options, self.name)
            names, colors = read_class_list(root, where=root.name)
            mask_dir = "masks" if (root / "masks").is_dir() else "color"
            items = items_from_folders(root, "images", mask_dir)
            return apply_import(project, items, names, colors=colors, source=f"import:png:{root.name}",
                                options=opts, image_sets=manifest_sets(opts), where=root.name)
