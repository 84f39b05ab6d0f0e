"""A plain folder of mask PNGs named like the project's images, with an index or colour mapping.

Export::

    <stem>.png          one mask per image that has one: index PNG (mode L; option mode=index, the
                        default) or RGB in the class colours (mode=color; 255 drawn (224, 224, 192))
    labels.json         classes with colours
    mapping.json        with mode=color: {"#rrggbb": class name, ..., "#e0e0c0": "ignore"}
    manifest.json

Import (``import PROJECT --format masks FOLDER``): every ``*.png`` in the folder is the mask of
the project image with the same stem (no image files are carried: the images must already be in
the project). How pixel values become classes, ``--option mapping=``:

* ``index``: the value is the class index (255 = ignore). Classes are those of ``labels.json``
  when the folder has one (matched by name), else the project's.
* ``project``: RGB masks in the project's class colours.
* a JSON file, or inline JSON, ``{"#rrggbb": class}``; a class is a name or an index, and
  ``"ignore"`` / 255 marks ignore. A colour not in the mapping is an error naming the file.
* default: ``mapping.json`` from the folder if present, else ``index``.

Masks go in as kind ``imported`` (``--option kind=final`` etc. to choose).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import imageio
from ..store import parse_color
from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
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
    opt_choice,
    png_files,
    read_labels,
    read_mask_png,
    write_json,
    write_labels,
    write_manifest,
)

IGNORE_NAMES = ("ignore", "void", "255")


def color_table(project) -> dict[str, object]:
    """``{"#rrggbb": class name}`` plus the void colour -> "ignore"; refuses shared colours."""
    out: dict[str, object] = {}
    for c in project.classes():
        if c.hex in out:
            raise FormatError(f"classes '{out[c.hex]}' and '{c.name}' share the colour {c.hex}; recolour one "
                              "to export colour masks.")
        out[c.hex] = c.name
    void = "#%02x%02x%02x" % VOID_COLOR
    if void in out:
        raise FormatError(f"class '{out[void]}' uses {void}, the colour of ignore; recolour it.")
    out[void] = "ignore"
    return out


@register_format
class MasksFormat(Format):
    name = "masks"
    description = "a plain folder of <stem>.png masks (index, or colours with a mapping); images must be in the project"
    can_import = True
    carries_images = False
    export_options = {"mode": "index (default) or color"}
    import_options = {**COMMON_IMPORT_OPTIONS,
                      "mapping": "index, project, a JSON file or inline JSON {\"#rrggbb\": class} "
                                 "(default: mapping.json in the folder, else index)"}

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        ex = check_options(self.name, options.extra, self.export_options)
        mode = opt_choice(ex, "mode", ("index", "color"), "index")
        res = ExportResult(out_dir)
        table = color_table(project) if mode == "color" else None
        lut = np.zeros((256, 3), np.uint8)
        if table is not None:
            for c in project.classes():
                lut[c.idx] = c.color
            lut[IGNORE] = VOID_COLOR
        items = []
        for it in export_items(project, options):
            if it.mask is None:
                continue
            if mode == "index":
                data = imageio.encode_label_png(it.mask)
            else:
                data = imageio.encode_image_png(lut[it.mask])
            (out_dir / f"{it.stem}.png").write_bytes(data)
            res.masks += 1
            it.mask = None
            items.append(it)
        write_labels(project, out_dir)
        if table is not None:
            write_json(out_dir / "mapping.json", table)
        write_manifest(project, out_dir, self.name, options, items, mode=mode)
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            if not root.is_dir():
                raise FormatError(f"{root.name}: the masks format reads a folder of PNG masks.")
            opts = finish_options(options, root, self.import_options, self.name)
            mapping = opts.get("mapping")
            if mapping is None:
                mapping = str(root / "mapping.json") if (root / "mapping.json").is_file() else "index"
            labels = read_labels(root / "labels.json")
            names, colors = (labels if labels else (project.class_names, None))
            cmap = None
            if str(mapping).strip().lower() == "project":
                cmap = {c.color: c.idx for c in project.classes()}
                cmap.setdefault(VOID_COLOR, IGNORE)
                names, colors = project.class_names, None
            elif str(mapping).strip().lower() != "index":
                cmap, names = color_mapping(mapping, names)
            files = png_files(root)
            if not files:
                raise FormatError(f"{root.name}: no .png masks in the folder.")
            # With a colour mapping, a palette PNG is a colour mask too (editors save them so).
            items = [ImportItem(name=f"{p.stem}.png", image_path=None, where=p.name,
                                mask=lambda p=p: read_mask_png(p, p.name, cmap, palette_colors=cmap is not None))
                     for p in files]
            return apply_import(project, items, names, colors=colors, source=f"import:masks:{root.name}",
                                options=opts, where=root.name)


def color_mapping(spec, names: list[str]) -> tuple[dict, list[str]]:
    """``({(r, g, b): dataset index}, dataset class names)`` from a JSON file or inline JSON."""
    s = str(spec).strip()
    if s.startswith("{"):
        try:
            raw = json.loads(s)
        except json.JSONDecodeError as e:
            raise FormatError(f"--option mapping: not valid JSON ({e}).") from None
        where = "mapping"
    else:
        p = Path(s)
        if not p.is_file():
            raise FormatError(f"mapping file {p} not found (use mapping=index, mapping=project, a JSON file, or "
                              "inline JSON {\"#rrggbb\": class}).")
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FormatError(f"{p.name}: not valid JSON ({e}).") from None
        where = p.name
    if not isinstance(raw, dict) or not raw:
        raise FormatError(f"{where}: expected a JSON object {{\"#rrggbb\": class}}.")
    names = list(names)
    lower = [n.lower() for n in names]
    out = {}
    for col, cls in raw.items():
        try:
            rgb = parse_color(col)
        except Exception:
            raise FormatError(f"{where}: '{col}' is not a colour #rrggbb.") from None
        if str(cls).strip().lower() in IGNORE_NAMES:
            out[rgb] = IGNORE
        elif isinstance(cls, int) or str(cls).strip().isdigit():
            k = int(cls)
            if not 0 <= k < len(names):
                raise FormatError(f"{where}: class index {k} for {col} is outside 0..{len(names) - 1}.")
            out[rgb] = k
        else:
            name = str(cls).strip()
            if name.lower() not in lower:
                names.append(name)
                lower.append(name.lower())
            out[rgb] = lower.index(name.lower())
    return out, names


