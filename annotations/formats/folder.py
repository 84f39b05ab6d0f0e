"""The folder-dataset layout of ../shared/datasets/README.md, both ways.

Export writes ``meta.json``, ``images/<stem>.<ext>`` (the original bytes; an image whose EXIF
orientation turns it written upright, see :func:`._common.write_image_file`), ``masks/<stem>.png``
(the chosen mask per image), ``scribbles/<layer>/<stem>.png`` (the current version of every
scribble layer; layers whose names make the same folder get distinct ones, ``a`` and ``a_2``),
``splits/<set>.txt`` (image sets), ``tags.json`` (image-level tags, as the ``weak`` format writes
them) and ``manifest.json`` (kind and provenance of each exported mask; ``layers``: folder ->
layer name). Import is :func:`annotations.importer.import_folder_dataset` (of the folder, or of
the folder a ``.zip`` holds); it reads all of these back.
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import imageio
from ..store import sanitize_name
from . import ExportOptions, ExportResult, Format, register_format
from ._common import (MERGE_OPTIONS, LabelMerge, check_options, dataset_root, export_mask,
                      layer_dirs, upright_note, write_image_file, write_json, write_scribble_layers)


def mask_for_export(project, info, options: ExportOptions):
    """``(mask, MaskInfo)`` chosen by ``options.masks`` (a prediction older than strokes drawn
    since corrected by them, see :func:`._common.export_mask`), or ``None``."""
    return export_mask(project, info, options)


def manifest_entry(info) -> dict:
    return {"kind": info.kind, "source": info.source, "model_version": info.model_version,
            "created": info.created, "uncertainty": info.uncertainty}


@register_format
class FolderFormat(Format):
    name = "folder"
    description = "folder dataset: meta.json, images/, masks/, scribbles/<set>/, splits/"
    can_import = True
    import_options = {"kind": "mask kind for every mask (pseudo, predicted, final, imported, or manifest: as "
                              "recorded); default imported; re-import with manifest.json: edited final, unchanged "
                              "skipped",
                      **MERGE_OPTIONS}

    def export(self, project, out_dir: Path, options: ExportOptions) -> ExportResult:
        res = ExportResult(out_dir)
        images = project.images()
        if options.image_ids is not None:
            keep = set(options.image_ids)
            images = [i for i in images if i.id in keep]
        classes = project.classes()
        meta = {"name": project.root.name, "classes": [c.name for c in classes],
                "colors": [c.hex for c in classes], "ignore_index": 255,
                "source": "exported by weakseg", "masks": options.masks}
        (out_dir / "images").mkdir()
        (out_dir / "masks").mkdir()
        check_options(self.name, options.extra, self.export_options)
        manifest = {}
        dirs = layer_dirs(project.scribble_layers())
        all_tags = project.all_tags()
        names = [c.name for c in classes]
        tags = {}
        upright = 0
        for info in images:
            stem = sanitize_name(info.stem)
            ext = Path(info.file).suffix.lower() or ".png"
            upright += write_image_file(project, info, out_dir / "images" / f"{stem}{ext}")
            res.images += 1
            got = mask_for_export(project, info, options)
            if got is not None:
                mask, minfo = got
                (out_dir / "masks" / f"{stem}.png").write_bytes(imageio.encode_label_png(mask))
                manifest[stem] = manifest_entry(minfo)
                res.masks += 1
            res.scribbles += len(write_scribble_layers(project, info.id, stem, out_dir / "scribbles", dirs))
            if all_tags.get(info.id):
                tags[stem] = {names[c]: state for c, state in sorted(all_tags[info.id].items())}
        exported = {i.id: sanitize_name(i.stem) for i in images}
        sets = project.image_sets()
        if sets:
            (out_dir / "splits").mkdir()
            for s in sets:
                ids = [exported[i] for i in project.image_set(s) if i in exported]
                (out_dir / "splits" / f"{sanitize_name(s, 'split')}.txt").write_text("".join(f"{i}\n" for i in ids))
        (out_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        if tags:
            write_json(out_dir / "tags.json", {"classes": names, "tags": tags})
            res.notes.append(f"image-level tags of {len(tags)} image(s) written to tags.json")
        write_json(out_dir / "manifest.json", {"masks": manifest, "layers": dirs, "exported": project._stamp()})
        res.notes += upright_note(upright)
        return res

    def import_into(self, project, path: Path, options: dict | None = None):
        from ..importer import import_folder_dataset

        options = check_options(self.name, dict(options or {}), self.import_options)
        with dataset_root(path) as root:  # a folder, or a .zip of one
            return import_folder_dataset(project, root, kind=options.get("kind"),  # None: MaskRule decides
                                         merge=LabelMerge(options))
