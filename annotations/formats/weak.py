"""The weak labels themselves: scribbles and image-level tags, both ways.

Export::

    images/<stem>.<ext>             the original image files (upright when EXIF-rotated; images=none skips them)
    scribbles/<layer>/<stem>.png    the current version of every scribble layer: (H, W) uint8,
                                    class index, 255 = not scribbled
    tags.json                       {"classes": [names], "tags": {stem: {class name: "present" | "absent"}}}
    tags.csv                        image,class,state (one row per tag)
    labels.json                     classes with colours
    manifest.json                   layer folder -> layer name, scribble version/author per image and layer

Import reads the same files back: scribbles become a new version of the layer of the same name
(the name recorded in manifest.json, else the folder name); tags are set. On an image the project
already holds, strokes and tags drawn or set there since are kept (options ``scribbles=replace``,
``tags=replace``; see :class:`._common.LabelMerge`). Images the project
lacks are added from ``images/``.
"""
from __future__ import annotations

import csv
from pathlib import Path

from . import ExportOptions, ExportResult, Format, register_format
from ._common import (
    COMMON_EXPORT_OPTIONS,
    MERGE_OPTIONS,
    FormatError,
    ImportItem,
    UnknownClassError,
    apply_import,
    check_options,
    copy_image,
    dataset_root,
    export_items,
    finish_options,
    find_image_files,
    layer_dirs,
    manifest_sets,
    png_files,
    read_json,
    read_label_png,
    read_labels,
    tags_csv,
    upright_note,
    write_json,
    write_labels,
    write_manifest,
    write_scribble_layers,
)


@register_format
class WeakFormat(Format):
    name = "weak"
    description = "scribbles/<layer>/<stem>.png + tags.json / tags.csv (the weak labels, importable back)"
    can_import = True
    export_options = dict(COMMON_EXPORT_OPTIONS)
    import_options = {"add_classes": "true: add classes the project lacks instead of failing (default false)",
                      **MERGE_OPTIONS}

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        check_options(self.name, options.extra, self.export_options)
        res = ExportResult(out_dir)
        names = project.class_names
        layers = project.scribble_layers()
        dirs = layer_dirs(layers)  # distinct folders; manifest.json's "layers" gives the names back
        all_tags = project.all_tags()
        tags, rows, scribble_meta = {}, [], {}
        items = []
        for it in export_items(project, options, with_masks=False):
            items.append(it)
            if copy_image(project, it, out_dir / "images", options):
                res.images += 1
            for layer in write_scribble_layers(project, it.info.id, it.stem, out_dir / "scribbles", dirs):
                scribble_meta.setdefault(it.stem, {})[layer] = {"version": project.scribble_version(it.info.id, layer)}
                res.scribbles += 1
            t = all_tags.get(it.info.id)
            if t:
                tags[it.stem] = {names[c]: s for c, s in sorted(t.items())}
                rows += [(it.stem, names[c], s) for c, s in sorted(t.items())]
        write_json(out_dir / "tags.json", {"classes": names, "tags": tags})
        (out_dir / "tags.csv").write_text(tags_csv(rows), encoding="utf-8")
        write_labels(project, out_dir)
        write_manifest(project, out_dir, self.name, options, items, layers=dirs, scribbles=scribble_meta)
        res.notes += upright_note(sum(it.upright for it in items))
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        with dataset_root(path) as root:
            opts = finish_options(options, root, self.import_options, self.name)
            manifest = opts["_manifest"]
            tj = read_json(root / "tags.json") if (root / "tags.json").is_file() else None
            labels = read_labels(root / "labels.json")
            if labels:
                names, colors = labels
            elif tj and isinstance(tj.get("classes"), list):
                names, colors = [str(n) for n in tj["classes"]], None
            else:
                raise FormatError(f"{root.name}: no labels.json or tags.json naming the classes.")
            index = {n.lower(): k for k, n in enumerate(names)}
            tags = read_tags(root, tj, index)
            layer_names = manifest.get("layers") or {}
            scr: dict[str, dict[str, Path]] = {}
            sroot = root / "scribbles"
            if sroot.is_dir():
                for d in sorted(p for p in sroot.iterdir() if p.is_dir()):
                    for f in png_files(d):
                        scr.setdefault(f.stem, {})[layer_names.get(d.name, d.name)] = f
            images = find_image_files(root / "images")
            items = []
            for stem in sorted(set(images) | set(scr) | set(tags)):
                ip = images.get(stem)
                items.append(ImportItem(
                    name=ip.name if ip else f"{stem}.png", image_path=ip, where=f"{stem}",
                    scribbles={layer: (lambda p=p, w=f"scribbles/{p.parent.name}/{p.name}": read_label_png(p, w))
                               for layer, p in scr.get(stem, {}).items()},
                    tags=tags.get(stem, {})))
            return apply_import(project, items, names, colors=colors, source=f"import:weak:{root.name}",
                                options=opts, image_sets=manifest_sets(opts), where=root.name)


def read_tags(root: Path, tj: dict | None, index: dict[str, int]) -> dict[str, dict[int, str]]:
    """``{stem: {class index: state}}`` from tags.json, else tags.csv."""
    out: dict[str, dict[int, str]] = {}

    def put(stem, cname, state, where):
        k = index.get(str(cname).strip().lower())
        if k is None:
            raise UnknownClassError(f"{where}: tag class '{cname}' (image {stem}) is not among the classes "
                                    f"({', '.join(index)}).")
        out.setdefault(str(stem), {})[k] = str(state).strip().lower()

    if tj is not None:
        t = tj.get("tags", {})
        if not isinstance(t, dict):
            raise FormatError("tags.json: 'tags' must map image stems to {class: state}.")
        for stem, d in t.items():
            if not isinstance(d, dict):
                raise FormatError(f"tags.json: the tags of {stem} must be {{class: state}}.")
            for cname, state in d.items():
                put(stem, cname, state, "tags.json")
    elif (root / "tags.csv").is_file():
        with open(root / "tags.csv", newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                try:
                    put(row["image"], row["class"], row["state"], f"tags.csv line {n}")
                except KeyError:
                    raise FormatError("tags.csv: expected the columns image,class,state.") from None
    return out
