"""COCO JSON (semantic masks as RLE, or exact polygons), readable by ``pycocotools.coco.COCO``.

Export::

    annotations.json    {"info", "licenses", "images", "annotations", "categories"}
    images/<file_name>  the original image files (upright when EXIF-rotated; option images=none skips them)
    labels.json, manifest.json

* Only images that have a mask are listed: COCO readers treat every listed image as fully
  annotated, so listing an unannotated one would teach "all background".
* One annotation per class present in an image (``iscrowd`` 0), its ``segmentation`` a compressed
  RLE (default; counts as a string) or, with ``--option segmentation=polygon``, a list of exact
  pixel-edge polygons (one per 4-connected component, holes joined by a zero-area bridge; they
  rasterise back bit for bit with pycocotools). ``area`` and ``bbox`` are exact.
* Categories: ``id`` = the class index, with ``name`` and ``color``. The background class (class
  0 named "background", option ``background=auto``) is not a category: pixels no annotation
  covers are background. ``background=include`` writes it as category 0 too; ``skip`` always
  leaves class 0 out.
* Ignore (255): COCO has no ignore label. The regions are kept losslessly in a key of the image
  entry, ``"weakseg_ignore"`` (a compressed RLE); other COCO tools ignore the key, so for them
  those pixels read as background (documented loss). ``info.weakseg`` records the background
  class.

Import reads any COCO file (RLE, uncompressed RLE, polygons; overlapping annotations are painted
in file order, later ones on top). Classes: background + categories sorted by id (so ids need not
be contiguous). Images are found next to the JSON (``images/``, the JSON's folder, or
``--option images=DIR``); images the project lacks are added, matched by file name.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_EXPORT_OPTIONS,
    COMMON_IMPORT_OPTIONS,
    IGNORE,
    FormatError,
    ImportItem,
    SizeMismatchError,
    UnknownClassError,
    DuplicateNameError,
    apply_import,
    background_class,
    check_options,
    copy_image,
    dataset_root,
    export_items,
    finish_options,
    manifest_sets,
    read_mask_file,
    selected_images,
    opt_choice,
    read_json,
    read_labels,
    write_labels,
    upright_note,
    write_manifest,
)
from ._functional import decode_rle, encode_rles_with_stats, mask_to_polygons, present_values

ANNOTATION_FILE = "annotations.json"


def encode_image(mask: np.ndarray, bg: int | None, segmentation: str, candidates: list[int] | None = None) -> dict:
    """COCO pieces of one (H, W) uint8 mask: shape, ignore RLE, and ``(class, seg, area, bbox)`` per class.

    ``candidates``: the values to try (ascending, 255 last), empty ones dropped; ``None`` finds
    the present values with a histogram first (cheaper when there are many classes).
    """
    if candidates is None:
        candidates = [int(v) for v in present_values(mask) if v != bg]
    rles, areas, boxes = encode_rles_with_stats(mask, candidates)
    keep = [k for k, a in enumerate(areas) if a > 0]
    vals = [candidates[k] for k in keep]
    rles, areas, boxes = [rles[k] for k in keep], [areas[k] for k in keep], [boxes[k] for k in keep]
    ignore = None
    if vals and vals[-1] == IGNORE:  # the ignore region (255) sorts last
        ignore = rles.pop()
        vals, areas, boxes = vals[:-1], areas[:-1], boxes[:-1]
    segs = rles if segmentation == "rle" else [mask_to_polygons(mask == c) for c in vals]
    return {"shape": mask.shape, "ignore": ignore, "anns": list(zip(vals, segs, areas, boxes))}


def coco_dict(project, items, encoded, options: ExportOptions, bg: int | None) -> dict:
    """The COCO dict: images/annotations numbered from 1; ``encoded`` from :func:`encode_image`."""
    images, anns = [], []
    ann_id = 1
    for img_id, (it, enc) in enumerate(zip(items, encoded), 1):
        h, w = enc["shape"]
        entry = {"id": img_id, "file_name": it.file_name, "width": int(w), "height": int(h)}
        if enc["ignore"] is not None:
            entry["weakseg_ignore"] = enc["ignore"]
        for c, seg, area, box in enc["anns"]:
            anns.append({"id": ann_id, "image_id": img_id, "category_id": c, "segmentation": seg,
                         "area": area, "bbox": box, "iscrowd": 0})
            ann_id += 1
        images.append(entry)
    cats = [{"id": c.idx, "name": c.name, "supercategory": "", "color": c.hex}
            for c in project.classes() if c.idx != bg]
    info = {"description": f"{project.root.name} exported by weakseg", "version": "1.0",
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "weakseg": {"background_class": None if bg is None else project.class_names[bg],
                        "ignore": "images[].weakseg_ignore (RLE of the 255 regions)",
                        "masks": options.masks}}
    return {"info": info, "licenses": [], "images": images, "annotations": anns, "categories": cats}


@register_format
class CocoFormat(Format):
    name = "coco"
    description = "COCO JSON: one RLE (or exact polygon) annotation per class per image; pycocotools-readable"
    can_import = True
    export_options = {**COMMON_EXPORT_OPTIONS,
                      "segmentation": "rle (default) or polygon",
                      "background": "auto (default: leave out class 0 if named background), skip or include"}
    import_options = {**COMMON_IMPORT_OPTIONS,
                      "images": "folder holding the image files (default: beside the JSON)"}

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        ex = check_options(self.name, options.extra, self.export_options)
        segmentation = opt_choice(ex, "segmentation", ("rle", "polygon"), "rle")
        bg = background_class(project, opt_choice(ex, "background", ("auto", "skip", "include"), "auto"))
        res = ExportResult(out_dir)
        items = []
        for it in export_items(project, options, with_masks="info"):
            if it.mask_info is not None:
                items.append(it)
        left_out = len(selected_images(project, options)) - len(items)

        def work(it):  # read + encode; OpenCV's PNG decoder releases the GIL, so threads overlap
            # a stale prediction comes corrected (export_mask), the others are read here
            mask = it.mask if it.mask is not None else read_mask_file(project.root / it.mask_info.file)
            if tuple(mask.shape) != (it.info.height, it.info.width):
                raise SizeMismatchError(f"{it.info.name}: its stored mask is {mask.shape[1]}x{mask.shape[0]}, the "
                                        f"image {it.info.width}x{it.info.height}.")
            enc = encode_image(mask, bg, segmentation, candidates)
            copy_image(project, it, out_dir / "images", options)
            return enc

        # Few classes: encoding each (and dropping empty ones) is cheaper than a histogram first.
        candidates = [c for c in range(project.num_classes) if c != bg] + [IGNORE]
        if len(candidates) > 8:
            candidates = None
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            encoded = list(pool.map(work, items))
        if opt_choice(ex, "images", ("copy", "none"), "copy") == "copy":
            res.images = len(items)
        data = coco_dict(project, items, encoded, options, bg)
        res.masks = len(items)
        (out_dir / ANNOTATION_FILE).write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        write_labels(project, out_dir)
        write_manifest(project, out_dir, self.name, options, items, segmentation=segmentation,
                       background_class=data["info"]["weakseg"]["background_class"])
        options.maskless_left_out = True  # the strokes-only note says so
        if left_out:
            res.notes.append(f"{left_out} image(s) without a {'final ' if options.masks == 'final' else ''}mask left out "
                             "(COCO lists annotated images only)")
        res.notes += upright_note(sum(it.upright for it in items))
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            json_path = find_annotation_file(root)
            base = json_path.parent
            opts = finish_options(options, base, self.import_options, self.name)
            data = read_json(json_path)
            names, colors, cat_index, fill = coco_classes(data, json_path.name, base)
            img_dirs = [Path(opts["images"])] if opts.get("images") else [base / "images", base, base.parent / "images"]
            items = coco_items(data, json_path.name, img_dirs, cat_index, fill)
            return apply_import(project, items, names, colors=colors, source=f"import:coco:{json_path.name}",
                                options=opts, image_sets=manifest_sets(opts), where=json_path.name)


def find_annotation_file(root: Path) -> Path:
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise FormatError(f"{root.name}: a COCO dataset is a .json file or a folder holding one.")
        return root
    for cand in (root / ANNOTATION_FILE, root / "annotations" / ANNOTATION_FILE):
        if cand.is_file():
            return cand
    found = [p for d in (root, root / "annotations") if d.is_dir() for p in sorted(d.glob("*.json"))
             if p.name not in ("labels.json", "manifest.json")]
    if len(found) == 1:
        return found[0]
    if not found:
        raise FormatError(f"{root.name}: no COCO annotation file ({ANNOTATION_FILE}) found.")
    raise FormatError(f"{root.name}: several JSON files ({', '.join(p.name for p in found)}); pass the one to "
                      "import as PATH.")


def coco_classes(data: dict, where: str, base: Path):
    """``(names, colors, {category id: class index}, fill index for uncovered pixels)``."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError(f"{where}: not a COCO file (no 'images' list).")
    cats = data.get("categories") or []
    try:
        cats = sorted(cats, key=lambda c: int(c["id"]))
        ids = [int(c["id"]) for c in cats]
        cnames = [str(c["name"]).strip() for c in cats]
    except (TypeError, KeyError, ValueError):
        raise FormatError(f"{where}: every category needs an 'id' and a 'name'.") from None
    if len(set(ids)) != len(ids):
        raise DuplicateNameError(f"{where}: two categories share the id {next(i for i in ids if ids.count(i) > 1)}.")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    ws = info.get("weakseg") if isinstance(info.get("weakseg"), dict) else None
    bg_name = ws.get("background_class") if ws is not None else "background"
    ccolors = [c.get("color") for c in cats]
    lower = [n.lower() for n in cnames]
    if bg_name is None:
        names, colors, offset, fill = cnames, ccolors, 0, IGNORE
    elif bg_name.lower() in lower:
        names, colors, offset, fill = cnames, ccolors, 0, lower.index(bg_name.lower())
    else:
        names, colors, offset, fill = [bg_name] + cnames, [None] + ccolors, 1, 0
    labels = read_labels(base / "labels.json")
    if labels and [n.lower() for n in labels[0]] == [n.lower() for n in names]:
        colors = labels[1]  # the background's colour too
    return names, colors, {i: k + offset for k, i in enumerate(ids)}, fill


def coco_items(data: dict, where: str, img_dirs: list[Path], cat_index: dict, fill: int) -> list[ImportItem]:
    anns_by_image: dict = {}
    for a in data.get("annotations") or []:
        try:
            anns_by_image.setdefault(a["image_id"], []).append(a)
        except (TypeError, KeyError):
            raise FormatError(f"{where}: an annotation has no 'image_id'.") from None
    seen_ids = set()
    items = []
    for im in data["images"]:
        try:
            iid, fname, h, w = im["id"], str(im["file_name"]), int(im["height"]), int(im["width"])
        except (TypeError, KeyError, ValueError):
            raise FormatError(f"{where}: every image needs 'id', 'file_name', 'width' and 'height'.") from None
        if iid in seen_ids:
            raise DuplicateNameError(f"{where}: two images share the id {iid}.")
        seen_ids.add(iid)
        path = None
        for d in img_dirs:
            for cand in (d / fname, d / Path(fname).name):
                if cand.is_file():
                    path = cand
                    break
            if path:
                break
        anns = anns_by_image.get(iid, [])
        for a in anns:
            if a.get("category_id") not in cat_index:
                raise UnknownClassError(f"{where}: annotation {a.get('id')} (image {fname}) has category_id "
                                        f"{a.get('category_id')!r}, which is not among the categories (ids "
                                        f"{', '.join(repr(i) for i in sorted(cat_index)) or 'none'}).")
            if not a.get("segmentation"):
                raise FormatError(f"{where}: annotation {a.get('id')} (image {fname}) has no segmentation (a "
                                  "detection-only box?); this importer reads segmentation masks (polygons or "
                                  "RLE) only.")
        items.append(ImportItem(name=Path(fname).name, image_path=path, size=(h, w), where=f"{where}: {fname}",
                                mask=lambda im=im, anns=anns, h=h, w=w: _paint(im, anns, h, w, cat_index, fill,
                                                                              where)))
    return items


def _paint(im: dict, anns: list, h: int, w: int, cat_index: dict, fill: int, where: str) -> np.ndarray:
    """The (H, W) uint8 label map of one COCO image (dataset class indices)."""
    out = np.full((h, w), fill, np.uint8)
    segs = [(a.get("id"), a.get("segmentation"), cat_index[a["category_id"]]) for a in anns]
    if im.get("weakseg_ignore"):
        segs.append(("weakseg_ignore", im["weakseg_ignore"], IGNORE))
    for aid, seg, value in segs:
        if isinstance(seg, dict):
            size = seg.get("size")
            if not size or [int(v) for v in size] != [h, w]:
                raise SizeMismatchError(f"{where}: annotation {aid} of {im['file_name']} has size {size} but the "
                                        f"image is {h}x{w} (height x width).")
        try:
            m = decode_rle(seg, h, w)
        except Exception as e:  # pycocotools raises bare exceptions on bad input
            raise FormatError(f"{where}: annotation {aid} of {im['file_name']}: cannot decode its segmentation "
                              f"({e}).") from None
        out[m] = value
    return out
