"""YOLO segmentation (ultralytics): normalised polygons, one instance a line.

Export::

    images/<stem>.<ext>     images that have a mask (ultralytics reads an image without a label
                            file as background-only, so unannotated images are left out); upright
                            when EXIF-rotated
    labels/<stem>.txt       "cls x1 y1 x2 y2 ..." per 4-connected region of a class, coordinates
                            normalised to 0..1 (6 decimals); an all-background mask gives an empty file
    ignore/<stem>.txt       weakseg extension: "x1 y1 x2 y2 ..." polygons of the 255 (ignore)
                            regions; YOLO has no ignore label and ultralytics never reads this folder
    data.yaml               train/val: images (or train.txt / val.txt (and test.txt) when the project
                            has image sets of those names), nc, names (class index - 1 when class 0 is background),
                            weakseg_background: the class pixels outside every polygon belong to
    <set>.txt               ./images/<file> lists for the project's image sets
    labels.json, manifest.json

Polygons trace pixel edges (vertices at pixel corners; holes joined by a zero-area bridge), so
they rasterise back exactly with pycocotools (ultralytics' own cv2.fillPoly differs by at most a
boundary pixel). Import reads this layout and ultralytics' usual one (``images/<split>/`` with
``labels/<split>/``; the split becomes an image set); box lines (4 numbers) become rectangles.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .. import imageio
from ..store import sanitize_name
from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_EXPORT_OPTIONS,
    COMMON_IMPORT_OPTIONS,
    IGNORE,
    FormatError,
    ImportItem,
    UnknownClassError,
    apply_import,
    background_class,
    check_options,
    copy_image,
    dataset_root,
    export_items,
    finish_options,
    manifest_sets,
    opt_choice,
    read_labels,
    upright_note,
    write_labels,
    write_manifest,
)
from ._functional import mask_to_polygons, mask_utils, present_values


def _fmt_poly(poly: list[int], w: int, h: int) -> str:
    xy = np.asarray(poly, np.float64).reshape(-1, 2) / (w, h)
    return " ".join(f"{v:.6f}" for v in xy.ravel())


def label_lines(mask: np.ndarray, bg: int | None) -> tuple[list[str], list[str]]:
    """YOLO lines of a (H, W) uint8 mask and the ignore lines (polygons of 255)."""
    h, w = mask.shape
    offset = 0 if bg is None else 1
    lines, ignore = [], []
    for v in present_values(mask).tolist():
        if v == bg:
            continue
        for poly in mask_to_polygons(mask == v):
            if v == IGNORE:
                ignore.append(_fmt_poly(poly, w, h))
            else:
                lines.append(f"{v - offset} {_fmt_poly(poly, w, h)}")
    return lines, ignore


#: Characters a YAML reader refuses or reads as a line break inside a quoted string: written as
#: ``\\uXXXX`` escapes. Everything else (emoji, CJK beyond the BMP) is written as itself, UTF-8.
_YAML_ESCAPE = re.compile("[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _yaml_value(v) -> str:
    """A JSON-quoted value (valid YAML) with real UTF-8 characters, not JSON's surrogate-pair
    escapes (``"\\ud83d\\udc31"``), which YAML readers (PyYAML, so ultralytics) turn into two lone
    surrogates."""
    text = json.dumps(v, ensure_ascii=False)
    return _YAML_ESCAPE.sub(lambda m: "\\u%04x" % ord(m.group(0)), text)


def dump_yaml(data: dict) -> str:
    """A YAML file from str/int/None/list/dict values (strings JSON-quoted: valid YAML)."""
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(f"{k}:")
            out += [f"  {kk}: {_yaml_value(vv)}" for kk, vv in v.items()]
        else:
            out.append(f"{k}: {_yaml_value(v)}")
    return "\n".join(out) + "\n"


def load_yaml(path: Path) -> dict:
    """data.yaml: PyYAML when installed, else a reader for the flat subset YOLO files use."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path.name}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8.") from None
    try:
        import yaml  # type: ignore

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise FormatError(f"{path.name}: not valid YAML ({e}).") from None
        if not isinstance(data, dict):
            raise FormatError(f"{path.name}: expected a mapping of keys.")
        return data
    except ImportError:  # pragma: no cover - PyYAML ships with gradio
        return _load_flat_yaml(text, path.name)


def _scalar(s: str):
    s = s.strip()
    if s in ("", "null", "~"):
        return None
    try:
        return json.loads(s)
    except json.JSONDecodeError:
        if s.startswith("[") and s.endswith("]"):
            return [_scalar(x) for x in s[1:-1].split(",") if x.strip()]
        return s.strip("'")


def _load_flat_yaml(text: str, name: str) -> dict:
    data: dict = {}
    key = None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            k, _, v = line.partition(":")
            key = k.strip()
            data[key] = _scalar(v) if v.strip() else None
        elif key is not None:
            item = line.strip()
            if item.startswith("- "):
                data[key] = (data[key] or []) + [_scalar(item[2:])]
            else:
                k, _, v = item.partition(":")
                data[key] = data[key] or {}
                data[key][_scalar(k)] = _scalar(v)
    return data


@register_format
class YoloFormat(Format):
    name = "yolo"
    description = "YOLO segmentation (ultralytics): images/, labels/<stem>.txt normalised polygons, data.yaml"
    can_import = True
    export_options = {**COMMON_EXPORT_OPTIONS,
                      "background": "auto (default: class 0 named background is not a YOLO class), skip or include"}
    import_options = dict(COMMON_IMPORT_OPTIONS)

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        ex = check_options(self.name, options.extra, self.export_options)
        bg = background_class(project, opt_choice(ex, "background", ("auto", "skip", "include"), "auto"))
        res = ExportResult(out_dir)
        (out_dir / "labels").mkdir()
        items, left_out = [], 0
        for it in export_items(project, options):
            if it.mask is None:
                left_out += 1
                continue
            if copy_image(project, it, out_dir / "images", options):
                res.images += 1
            lines, ignore = label_lines(it.mask, bg)
            (out_dir / "labels" / f"{it.stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            if ignore:
                (out_dir / "ignore").mkdir(exist_ok=True)
                (out_dir / "ignore" / f"{it.stem}.txt").write_text("".join(f"{ln}\n" for ln in ignore))
            res.masks += 1
            it.mask = None
            items.append(it)
        names = {c.idx - (0 if bg is None else 1): c.name for c in project.classes() if c.idx != bg}
        data = {"train": "images", "val": "images", "nc": len(names), "names": names,
                "weakseg_background": None if bg is None else project.class_names[bg]}
        stems = {it.info.id: it for it in items}
        set_files: dict[str, str] = {}
        for s in project.image_sets():
            members = [stems[i] for i in project.image_set(s) if i in stems]
            if members:
                fname = f"{sanitize_name(s, 'set')}.txt"
                (out_dir / fname).write_text("".join(f"./images/{m.file_name}\n" for m in members))
                set_files.setdefault(s.strip().lower(), fname)
        val = next((set_files[k] for k in ("val", "valid", "validation") if k in set_files), None)
        if "train" in set_files and val:  # the project's own split; else train and val both read all images
            data["train"], data["val"] = set_files["train"], val
            if "test" in set_files:
                data = {"train": data["train"], "val": data["val"], "test": set_files["test"],
                        **{k: v for k, v in data.items() if k not in ("train", "val")}}
        (out_dir / "data.yaml").write_text(dump_yaml(data), encoding="utf-8")
        write_labels(project, out_dir)
        write_manifest(project, out_dir, self.name, options, items)
        options.maskless_left_out = True  # the strokes-only note says so
        if left_out:
            res.notes.append(f"{left_out} image(s) without a {'final ' if options.masks == 'final' else ''}mask left out "
                             "(YOLO reads them as background-only)")
        res.notes += upright_note(sum(it.upright for it in items))
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            yaml_path = find_yaml(root)
            opts = finish_options(options, root, self.import_options, self.name)
            names, colors, offset, fill = yolo_classes(yaml_path, root)
            items, sets = yolo_items(root, offset, fill, len(names))
            return apply_import(project, items, names, colors=colors, source=f"import:yolo:{root.name}",
                                options=opts, image_sets=manifest_sets(opts) or sets or None, where=root.name)


def find_yaml(root: Path) -> Path:
    if (root / "data.yaml").is_file():
        return root / "data.yaml"
    found = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    if len(found) == 1:
        return found[0]
    raise FormatError(f"{root.name}: no data.yaml naming the classes" + (
        f" (several YAML files: {', '.join(p.name for p in found)})" if found else "") + ".")


def yolo_classes(yaml_path: Path, root: Path):
    """``(class names, colours, YOLO index -> class index offset, fill for uncovered pixels)``."""
    data = load_yaml(yaml_path)
    raw = data.get("names")
    if isinstance(raw, dict):
        try:
            pairs = sorted((int(k), str(v)) for k, v in raw.items())
        except (TypeError, ValueError):
            raise FormatError(f"{yaml_path.name}: 'names' keys must be class numbers 0, 1, ...") from None
        if [k for k, _ in pairs] != list(range(len(pairs))):
            raise FormatError(f"{yaml_path.name}: 'names' must number the classes 0, 1, 2, ... without gaps.")
        ynames = [v for _, v in pairs]
    elif isinstance(raw, list):
        ynames = [str(v) for v in raw]
    else:
        raise FormatError(f"{yaml_path.name}: no 'names' list of classes.")
    ynames = [_whole_chars(n, yaml_path.name) for n in ynames]
    bg = data.get("weakseg_background", "background") if "weakseg_background" in data else "background"
    lower = [n.strip().lower() for n in ynames]
    if bg is None:
        names, offset, fill = ynames, 0, IGNORE
    elif str(bg).strip().lower() in lower:  # the names list the background class already (as coco_classes)
        names, offset, fill = ynames, 0, lower.index(str(bg).strip().lower())
    else:
        names, offset, fill = [str(bg)] + ynames, 1, 0
    labels = read_labels(root / "labels.json")
    colors = labels[1] if labels and [n.lower() for n in labels[0]] == [n.lower() for n in names] else None
    return names, colors, offset, fill


def _whole_chars(name: str, where: str) -> str:
    """A class name as real characters: surrogate pairs that a YAML reader hands out for a
    ``"\\ud83d\\udc31"`` escape (older exports of this tool wrote those) are joined into the
    character; a lone surrogate is a :class:`FormatError`."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise FormatError(f"{where}: the class name {ascii(name)} holds an unpaired \\uXXXX escape (half of a "
                          "character); correct it in the file (write the character itself, UTF-8).") from None


def yolo_items(root: Path, offset: int, fill: int, n_classes: int):
    img_root, lab_root = root / "images", root / "labels"
    images: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(img_root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in imageio.IMAGE_EXTENSIONS:
                rel = (Path(dirpath) / f).relative_to(img_root)
                images[rel.with_suffix("").as_posix()] = Path(dirpath) / f
    labels = {p.relative_to(lab_root).with_suffix("").as_posix(): p for p in sorted(lab_root.rglob("*.txt"))} \
        if lab_root.is_dir() else {}
    items, sets = [], {}
    for key in sorted(set(images) | set(labels)):
        ip, lp = images.get(key), labels.get(key)
        stem = Path(key).name
        ign = root / "ignore" / f"{key}.txt"
        where = f"labels/{key}.txt" if lp else f"images/{ip.name}"
        loader = None
        if lp is not None:
            def loader(size, lp=lp, ign=ign, where=where):
                return paint_yolo(lp, ign if ign.is_file() else None, size, offset, fill, n_classes, where)
        items.append(ImportItem(name=ip.name if ip else f"{stem}.png", image_path=ip, mask_sized=loader,
                                where=where))
        if "/" in key:
            sets.setdefault(key.split("/")[0], []).append(stem)
    return items, sets


def _parse_lines(path: Path, where: str, with_class: bool):
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):  # -sig: a BOM is no number
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            raise FormatError(f"{where} line {n}: not numbers ('{line[:40]}').") from None
        cls = None
        if with_class:
            cls, vals = vals[0], vals[1:]
            if cls != int(cls):
                raise FormatError(f"{where} line {n}: class '{parts[0]}' is not a whole number.")
            cls = int(cls)
        if len(vals) % 2 or len(vals) < 4:
            raise FormatError(f"{where} line {n}: expected x y pairs (at least 2 points), got {len(vals)} numbers.")
        if len(vals) == 4 and with_class:  # a detection box: cx cy w h
            cx, cy, bw, bh = vals
            vals = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, cx - bw / 2,
                    cy + bh / 2]
        if min(vals) < -0.01 or max(vals) > 1.01:
            raise FormatError(f"{where} line {n}: coordinates must be normalised to 0..1.")
        out.append((n, cls, vals))
    return out


def paint_yolo(label_path: Path, ignore_path: Path | None, size: tuple[int, int], offset: int, fill: int,
               n_classes: int, where: str) -> np.ndarray:
    """(H, W) uint8 dataset-index map: ``fill`` where no polygon is, lines painted in file order.

    Every polygon is rasterised as :func:`._functional.polygons_to_mask` does (pycocotools, on the
    whole image), but painted from its RLE over the span its runs cover (:func:`_paint_rle`), not
    through a full-size mask per polygon: the same pixels, a 12-megapixel image with hundreds of
    polygons in well under a second instead of ~15 s."""
    h, w = size
    out = np.full((h, w), fill, np.uint8, order="F")  # column-major, as pycocotools' RLEs run
    scale = np.array([w, h], np.float64)
    rows = [(n, c, v) for n, c, v in _parse_lines(label_path, where, True)]
    if ignore_path is not None:
        rows += [(n, None, v) for n, _, v in _parse_lines(ignore_path, f"ignore/{ignore_path.name}", False)]
    polys, values = [], []
    for n, cls, vals in rows:
        if cls is not None and not 0 <= cls < n_classes - offset:
            raise UnknownClassError(f"{where} line {n}: class {cls} is not in data.yaml's names "
                                    f"(0..{n_classes - offset - 1}).")
        poly = (np.asarray(vals).reshape(-1, 2) * scale).ravel().tolist()
        if len(poly) >= 6:  # polygons_to_mask drops 2-point lines: they paint nothing
            polys.append(list(map(float, poly)))
            values.append(IGNORE if cls is None else cls + offset)
    if polys:
        flat = out.ravel(order="F")  # a view
        for rle, value in zip(mask_utils.frPyObjects(polys, h, w), values):
            _paint_rle(flat, rle["counts"], value)
    return np.ascontiguousarray(out)


def _rle_counts(counts: bytes) -> np.ndarray:
    """The run lengths (int64) of a pycocotools compressed RLE string, decoded as its
    ``rleFrString`` does: 5-bit groups, 0x20 = more follows, 0x10 in the last group = negative,
    each count from the third on a difference to the count two before."""
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return c
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each number
    starts = np.concatenate(([0], ends[:-1] + 1))
    nchar = ends - starts + 1
    k = np.arange(c.size) - np.repeat(starts, nchar)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * nchar[neg])
    out = x.copy()
    out[1::2] = np.cumsum(x[1::2])  # counts[m] += counts[m - 2] for m > 2
    out[2::2] = np.cumsum(x[2::2])
    return out


def _paint_rle(flat: np.ndarray, counts: bytes, value: int) -> None:
    """Set ``flat`` (an (H, W) map raveled column-major, as RLEs run) to ``value`` where the
    compressed RLE ``counts`` (runs of zeros and ones, zeros first) is 1, touching only the span
    from its first run of ones to its last."""
    pos = np.cumsum(_rle_counts(counts))
    a, b = pos[0:-1:2], pos[1::2]  # [a, b): the runs of ones
    keep = b > a
    if not keep.any():
        return
    a, b = a[keep], b[keep]
    base = int(a[0])
    edge = np.zeros(int(b[-1]) - base + 1, np.int8)
    edge[a - base] = 1  # the runs are sorted and apart: no index twice in either assignment
    edge[b - base] -= 1
    np.putmask(flat[base:int(b[-1])], np.cumsum(edge[:-1], dtype=np.int8).view(bool), value)
