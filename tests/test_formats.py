"""Export / import formats: every registered format round-trips a project exactly.

Parametrised over ``list_formats()``, so a format is tested the day it is registered. What a
format carries is looked up in CARRIES (default: masks); a new format that carries masks needs
no entry.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotations.errors import AnnotationError
from annotations.formats import ExportOptions, export_project, get_format, import_dataset, list_formats
from annotations.formats._common import DuplicateNameError, FormatError, SizeMismatchError, UnknownClassError
from annotations.store import Project, sanitize_name

#: What each format carries beyond images; formats not listed carry masks.
CARRIES = {"weak": {"scribbles", "tags", "layer_names"}, "folder": {"masks", "scribbles", "tags", "layer_names"}}
#: Formats that list only the images that have a mask (readers treat every listed image as annotated).
MASKED_ONLY = {"coco", "yolo"}
CLASSES = ["background", "cat", "dog", "bird"]


def carries(name: str) -> set[str]:
    return CARRIES.get(name, {"masks"})


def _save_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def label_maps(seed: int = 0):
    """Hand-made (H, W) uint8 label maps covering holes, border contact, single pixels, 255, empty."""
    out = []
    m = np.zeros((40, 56), np.uint8)
    m[5:20, 5:25] = 1
    m[9:14, 10:15] = 0  # hole
    m[11, 12] = 2  # island in the hole
    m[30:, 40:] = 3  # touches the bottom-right border
    m[0, :] = 2  # touches the top border
    m[25, 30] = 1  # single pixel
    m[26, 31] = 1  # diagonal neighbour (separate 4-connected region)
    m[33:38, 2:9] = 255  # ignore region
    out.append(m)
    out.append(np.zeros((33, 21), np.uint8))  # all background
    rng = np.random.default_rng(seed)
    out.append(rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), (24, 24), p=[0.4, 0.2, 0.2, 0.1, 0.1]))
    out.append(np.full((16, 16), 2, np.uint8))  # one class fills the image
    return out


def make_project(root: Path, with_extras: bool = True) -> Project:
    """A project with images of several kinds, masks of every kind, scribbles, tags and a set."""
    p = Project.create(root / "src", CLASSES)
    p.recolor_class(3, "#123456")
    files = root / "files"
    files.mkdir()
    rng = np.random.default_rng(3)
    maps = label_maps()
    kinds = ["final", "predicted", "pseudo", "imported"]
    ids = []
    for k, m in enumerate(maps):
        h, w = m.shape
        img = rng.integers(0, 256, (h, w, 3) if k % 2 == 0 else (h, w), np.uint8)
        name = ["a.png", "b image.png", "c.jpg", "d.bmp"][k]
        path = files / name
        Image.fromarray(img).save(path, quality=95) if name.endswith(".jpg") else _save_png(path, img)
        info = p.add_image(path)
        p.save_mask(info.id, m, kinds[k], source=f"test-{kinds[k]}", model_version="v1" if k else None)
        ids.append(info.id)
    # An image without a mask but with weak labels.
    info = p.add_image(_save_png(files / "e.png", rng.integers(0, 256, (12, 18, 3), np.uint8)))
    ids.append(info.id)
    if with_extras:
        scr = np.full((12, 18), 255, np.uint8)
        scr[2, 3:9] = 1
        scr[8, 1:15] = 0
        p.save_scribbles(info.id, scr, layer="default")
        scr2 = np.full(maps[0].shape, 255, np.uint8)
        scr2[6, 6:20] = 1
        p.save_scribbles(ids[0], scr2, layer="my layer/../x")
        p.set_tag(info.id, 1, "present")
        p.set_tag(info.id, 2, "absent")
        p.set_tag(ids[1], 3, "present")
        p.add_to_set("train", ids[:3])
    return p


@pytest.fixture
def src(tmp_path):
    return make_project(tmp_path)


def fresh_target(tmp_path: Path, src: Project, fmt_name: str, name: str = "dst") -> Project:
    """A new project; for formats that carry no images, the source's images are added first."""
    q = Project.create(tmp_path / name)
    if getattr(get_format(fmt_name), "carries_images", True) is False:
        for info in src.images():
            q.add_image(src.root / info.file, name=info.name, allow_same_content=True)
    return q


def export_import(src: Project, fmt: str, workdir: Path, **export_options) -> Project:
    """Export ``src`` in ``fmt`` to ``workdir/out-<fmt>``, import into a fresh ``workdir/dst-<fmt>``."""
    out = workdir / f"out-{fmt}"
    export_project(src, fmt, out, **export_options)
    assert (out / "manifest.json").is_file(), fmt
    dst = fresh_target(workdir, src, fmt, f"dst-{fmt}")
    import_dataset(dst, fmt, out)
    return dst


def assert_masks_equal(dst: Project, want: dict, label: str) -> None:
    """``dst``'s imported masks equal ``want`` ({stem: mask or None}) bit for bit."""
    got = {i.stem: dst.mask(i.id, "imported") for i in dst.images()}
    for stem, m in want.items():
        if m is not None:
            np.testing.assert_array_equal(got[stem], m, err_msg=f"{label}: {stem}")


def expected_export_mask(src: Project, info, masks: str = "best"):
    """The mask an export of ``masks`` writes for ``info`` (or None): the first stored kind; with
    ``best``, an image with strokes and no stored mask gets the pseudo-mask of its strokes (the
    default method, as ``python -m segmenter pseudo`` makes it; strokes of classes tagged absent
    left out)."""
    kinds = ("final",) if masks == "final" else ("final", "imported", "predicted", "pseudo")
    got = src.best_mask(info.id, kinds)
    if got is not None or masks == "final":
        return None if got is None else got[0]
    scr = src.scribbles(info.id)
    if scr is None:
        return None
    from segmenter.pseudo import DEFAULT_METHOD, get_method

    absent = [c for c, st in src.tags(info.id).items() if st == "absent"]
    scr = np.where(np.isin(scr, absent), 255, scr).astype(np.uint8)
    return get_method(DEFAULT_METHOD)(src.load_image(info.id), scr, src.num_classes).mask


def by_stem(p: Project) -> dict:
    return {i.stem: i for i in p.images()}


def assert_round_trip(src: Project, dst: Project, fmt_name: str, masks: str = "best"):
    what = carries(fmt_name)
    s_imgs, d_imgs = by_stem(src), by_stem(dst)
    assert [(c.name, c.hex) for c in dst.classes()] == [(c.name, c.hex) for c in src.classes()], fmt_name
    if "masks" in what:
        assert dst.class_names == src.class_names
        n = 0
        for stem, info in s_imgs.items():
            want = expected_export_mask(src, info, masks)
            if want is None:
                if stem in d_imgs:
                    assert dst.mask(d_imgs[stem].id, "imported") is None, stem
                continue
            assert stem in d_imgs, f"{fmt_name}: image {stem} missing after import"
            back = dst.mask(d_imgs[stem].id, "imported")
            assert back is not None, f"{fmt_name}: mask of {stem} missing"
            np.testing.assert_array_equal(back, want, err_msg=f"{fmt_name}: mask of {stem} differs")
            n += 1
        assert n == sum(1 for i in s_imgs.values() if expected_export_mask(src, i, masks) is not None)
    if "scribbles" in what:
        # Layer names are folder names; formats without "layer_names" keep only the sanitised name.
        name = (lambda x: x) if "layer_names" in what else (lambda x: sanitize_name(x, "layer"))
        for stem, info in s_imgs.items():
            for layer in src.scribble_layers(info.id):
                np.testing.assert_array_equal(dst.scribbles(d_imgs[stem].id, name(layer)),
                                              src.scribbles(info.id, layer))
        assert sorted(dst.scribble_layers()) == sorted(name(x) for x in src.scribble_layers())
    if "tags" in what:
        for stem, info in s_imgs.items():
            names = src.class_names
            want = {names[c]: s for c, s in src.tags(info.id).items()}
            got = {dst.class_names[c]: s for c, s in dst.tags(d_imgs[stem].id).items()} if stem in d_imgs else {}
            assert got == want, stem
    if fmt_name not in MASKED_ONLY and getattr(get_format(fmt_name), "carries_images", True):
        assert set(d_imgs) == set(s_imgs)


# ----------------------------------------------------------------------------- registry-wide
def test_registry_lists_the_formats():
    names = list_formats()
    for n in ("png", "coco", "voc", "yolo", "folder", "weak", "masks"):
        assert n in names


def test_unknown_format_lists_known_names(src, tmp_path):
    with pytest.raises(AnnotationError) as e:
        export_project(src, "labelme-xyz", tmp_path / "out")
    for n in list_formats():
        assert n in str(e.value)


@pytest.mark.parametrize("fmt", list_formats())
def test_round_trip(fmt, src, tmp_path):
    out = tmp_path / f"out-{fmt}"
    res = export_project(src, fmt, out)
    assert out.is_dir() and (out / "manifest.json").is_file()
    dst = fresh_target(tmp_path, src, fmt)
    import_dataset(dst, fmt, out)
    assert_round_trip(src, dst, fmt)
    if "masks" in carries(fmt):
        assert res.masks == 5  # 4 stored, and e's strokes made into a pseudo-mask at export


@pytest.mark.parametrize("fmt", list_formats())
def test_round_trip_through_zip(fmt, src, tmp_path):
    out = tmp_path / f"{fmt}.zip"
    export_project(src, fmt, out)
    assert zipfile.is_zipfile(out)
    dst = fresh_target(tmp_path, src, fmt)
    import_dataset(dst, fmt, out)
    assert_round_trip(src, dst, fmt)


@pytest.mark.parametrize("fmt", list_formats())
def test_an_export_imports_back_without_format(fmt, src, tmp_path):
    """An export (folder or .zip) imported without --format is read as the format its manifest.json
    names: a png export was taken as a folder of images, its mask and colour PNGs added as images."""
    from annotations.importer import import_path

    for out in (tmp_path / f"out-{fmt}", tmp_path / f"{fmt}.zip"):
        export_project(src, fmt, out)
        dst = fresh_target(tmp_path, src, fmt, f"dst-{out.name}")
        summary = import_path(dst, out)
        assert_round_trip(src, dst, fmt)
        if fmt not in ("folder", "nifti"):
            assert f"read as a '{fmt}' export" in " ".join(summary.notes)


@pytest.mark.parametrize("fmt", [f for f in list_formats() if "masks" in carries(f)])
def test_manifest_records_kind_and_provenance(fmt, src, tmp_path):
    export_project(src, fmt, tmp_path / "out")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    masks = man["masks"]
    assert masks["a"]["kind"] == "final" and masks["a"]["source"] == "test-final"
    assert masks["b image"]["kind"] == "predicted" and masks["b image"]["model_version"] == "v1"
    assert masks["c"]["kind"] == "pseudo" and masks["d"]["kind"] == "imported"
    assert masks["e"]["kind"] == "pseudo" and masks["e"]["source"] == "hybrid(strokes of 'default' at export)"


@pytest.mark.parametrize("fmt", [f for f in list_formats() if "masks" in carries(f)])
def test_final_only_exports_only_final_masks(fmt, src, tmp_path):
    res = export_project(src, fmt, tmp_path / "out", masks="final")
    assert res.masks == 1
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(man["masks"]) == {"a"}
    dst = fresh_target(tmp_path, src, fmt)
    import_dataset(dst, fmt, tmp_path / "out")
    assert_round_trip(src, dst, fmt, masks="final")


@pytest.mark.parametrize("fmt", [f for f in list_formats() if get_format(f).can_import and "masks" in carries(f)])
def test_kind_option_sets_the_mask_kind(fmt, src, tmp_path):
    export_project(src, fmt, tmp_path / "out")
    dst = fresh_target(tmp_path, src, fmt)
    import_dataset(dst, fmt, tmp_path / "out", kind="manifest")
    d = by_stem(dst)
    assert dst.mask_info(d["a"].id, "final") is not None
    assert dst.mask_info(d["b image"].id, "predicted") is not None
    assert dst.mask_info(d["a"].id, "imported") is None


@pytest.mark.parametrize("fmt", list_formats())
def test_failed_export_leaves_nothing(fmt, src, tmp_path, monkeypatch):
    import annotations.formats._common as common
    import annotations.formats.folder as folder_mod

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(common, "write_json", boom)
    monkeypatch.setattr(folder_mod.json, "dumps", boom)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        export_project(src, fmt, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize("fmt", list_formats())
def test_cli_export_and_import(fmt, src, tmp_path, capsys):
    from segmenter.cli import main

    out = tmp_path / "cli-out"
    assert main(["export", str(src.root), "--format", fmt, "--out", str(out)]) == 0
    dst = fresh_target(tmp_path, src, fmt)
    assert main(["import", str(dst.root), "--format", fmt, str(out)]) == 0
    assert_round_trip(Project.open(src.root), Project.open(dst.root), fmt)
    capsys.readouterr()


def test_cli_export_default_folders_in_the_same_second_and_an_out_under_a_file(src, tmp_path, capsys, monkeypatch):
    """Two exports in the same second to the default folder: the second was refused ("already
    exists"); an --out under a file was a traceback (bug hunt 44, #9a and #11)."""
    from segmenter.cli import main
    from segmenter.commands import project as project_cmd

    monkeypatch.setattr(project_cmd, "_stamp", lambda: "20261202-120000")
    for _ in range(2):
        assert main(["export", str(src.root), "--format", "png"]) == 0
    assert sorted(f.name for f in src.exports_dir.iterdir()) == ["png-20261202-120000", "png-20261202-120000-2"]
    assert main(["export", str(src.root), "--format", "png", "--option", "nosuch=1"]) == 2
    assert len(list(src.exports_dir.iterdir())) == 2  # a failed export leaves no empty folder
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    for out in ("afile/out", "afile/out.zip"):
        assert main(["export", str(src.root), "--format", "png", "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'afile'} is a file, not a folder" in err and "Traceback" not in err


def test_cli_bad_format_and_option_exit_2(src, tmp_path, capsys):
    from segmenter.cli import main

    assert main(["export", str(src.root), "--format", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "coco" in capsys.readouterr().err
    assert main(["export", str(src.root), "--format", "coco", "--out", str(tmp_path / "y"),
                 "--option", "segmentation=svg"]) == 2
    assert "segmentation" in capsys.readouterr().err
    assert main(["export", str(src.root), "--format", "coco", "--out", str(tmp_path / "z"),
                 "--option", "colour=red"]) == 2
    assert "no option 'colour'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["export", "import"])
def test_cli_help_lists_every_format_with_its_options(command, capsys, monkeypatch):
    """The formats and their --option keys were found only by passing a bad option: --help lists
    them, from the registry (a format registered tomorrow is listed too)."""
    from segmenter.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # no wrapping, so an option's help is on its key's line
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "see 'export --help'" not in text
    import re

    listing = text[text.index("formats (--format NAME) and their options (--option KEY=VALUE):"):]
    blocks = {b.split(":")[0].strip(): b for b in re.split(r"\n(?=  \S)", listing)[1:]}  # one per format
    assert sorted(blocks) == list_formats()
    for name, block in blocks.items():
        fmt = get_format(name)
        assert block.startswith(f"  {name}: {fmt.description}\n")
        sides = [("export", fmt.export_options)] + ([("import", fmt.import_options)] if fmt.can_import else [])
        for side, options in sides:
            assert (f"{side} options:" in block) and (bool(options) or f"{side} options: none" in block), (name, side)
            for key, help_ in options.items():
                assert any(line.split() == [key, *help_.split()] for line in block.splitlines()), (name, key)
    for name, key in [("coco", "segmentation"), ("voc", "jpeg_quality"), ("masks", "mapping"), ("folder", "kind")]:
        assert key in get_format(name).export_options or key in get_format(name).import_options


# ----------------------------------------------------------------------------- COCO
def _coco_masks(ann_file: Path):
    """Per file name, the label map pycocotools' own COCO loader gives (background 0)."""
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    out = {}
    for img in coco.loadImgs(coco.getImgIds()):
        m = np.zeros((img["height"], img["width"]), np.uint8)
        for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m[coco.annToMask(a).astype(bool)] = a["category_id"]
        out[img["file_name"]] = m
    return out


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_coco_loads_with_pycocotools_and_decodes_the_same(segmentation, src, tmp_path):
    export_project(src, "coco", tmp_path / "out", segmentation=segmentation)
    decoded = _coco_masks(tmp_path / "out" / "annotations.json")
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]  # background is not a category
    for info in src.images():
        got = expected_export_mask(src, info)
        if got is None:
            assert not any(k.startswith(info.stem + ".") for k in decoded)
            continue
        name = next(k for k in decoded if k.startswith(info.stem + "."))
        want = got.copy()
        want[want == 255] = 0  # COCO readers other than ours do not see the ignore regions
        np.testing.assert_array_equal(decoded[name], want)
    for a in data["annotations"]:
        assert (isinstance(a["segmentation"], dict)) == (segmentation == "rle")
        assert a["area"] > 0 and len(a["bbox"]) == 4 and a["iscrowd"] == 0


def test_coco_background_include_and_non_background_first_class(tmp_path):
    p = Project.create(tmp_path / "p", ["sky", "road"])
    info = p.add_image(_save_png(tmp_path / "i.png", np.zeros((8, 9, 3), np.uint8)))
    m = np.zeros((8, 9), np.uint8)
    m[4:, :] = 1
    m[0, 0] = 255
    p.save_mask(info.id, m, "final", source="t")
    export_project(p, "coco", tmp_path / "out")
    data = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["sky", "road"]  # class 0 is not "background": kept
    q = Project.create(tmp_path / "q")
    import_dataset(q, "coco", tmp_path / "out")
    assert q.class_names == ["sky", "road"]
    np.testing.assert_array_equal(q.mask(q.images()[0].id, "imported"), m)


def _foreign_coco(tmp_path: Path) -> Path:
    """A COCO file as other tools write it: sparse category ids, polygons, uncompressed RLE, overlap."""
    d = tmp_path / "foreign"
    (d / "images").mkdir(parents=True)
    _save_png(d / "images" / "x.png", np.full((10, 12, 3), 7, np.uint8))
    rle = {"size": [10, 12], "counts": [50, 4, 66]}  # column-major: column 5, rows 0..3
    data = {"images": [{"id": 7, "file_name": "x.png", "width": 12, "height": 10}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 18, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]], "iscrowd": 0},
                {"id": 3, "image_id": 7, "category_id": 18, "segmentation": rle, "iscrowd": 1}]}
    (d / "instances.json").write_text(json.dumps(data))
    return d


def test_coco_import_of_a_foreign_file(tmp_path):
    d = _foreign_coco(tmp_path)
    q = Project.create(tmp_path / "q")
    s = import_dataset(q, "coco", d / "instances.json")
    assert len(s.added) == 1
    assert q.class_names == ["background", "car", "dog"]  # background + categories sorted by id
    m = q.mask(q.images()[0].id, "imported")
    want = np.zeros((10, 12), np.uint8)
    want[0:4, 0:4] = 1
    want[2:6, 2:6] = 2  # later annotation on top
    want[0:4, 5] = 2
    np.testing.assert_array_equal(m, want)


def test_coco_without_its_image_files_names_the_annotation_file_once(tmp_path):
    d = _foreign_coco(tmp_path)
    (d / "images" / "x.png").unlink()
    with pytest.raises(FormatError) as e:
        import_dataset(Project.create(tmp_path / "q"), "coco", d / "instances.json")
    msg = str(e.value)  # was "instances.json: instances.json: a.png: no image named ..." (bug hunt 44)
    assert msg.startswith("instances.json: ") and msg.count("instances.json") == 1 and "import the images first" in msg


def test_coco_unknown_category_is_a_clear_error_and_changes_nothing(tmp_path):
    d = _foreign_coco(tmp_path)
    data = json.loads((d / "instances.json").read_text())
    data["annotations"][0]["category_id"] = 99
    (d / "instances.json").write_text(json.dumps(data))
    q = Project.create(tmp_path / "q")
    with pytest.raises(UnknownClassError, match=r"instances.json.*category_id 99"):
        import_dataset(q, "coco", d / "instances.json")
    assert q.images() == [] and q.class_names == ["background", "object"]


def test_coco_string_category_id_is_shown_as_a_string(tmp_path):
    d = _foreign_coco(tmp_path)
    data = json.loads((d / "instances.json").read_text())
    data["annotations"][0]["category_id"] = "3"
    (d / "instances.json").write_text(json.dumps(data))
    with pytest.raises(UnknownClassError, match=r"category_id '3', which is not among the categories \(ids 3, 18\)"):
        import_dataset(Project.create(tmp_path / "q"), "coco", d / "instances.json")


@pytest.mark.parametrize("seg", ["missing", None, []])
def test_coco_detection_only_annotation_is_a_clear_error(tmp_path, seg):
    d = _foreign_coco(tmp_path)
    data = json.loads((d / "instances.json").read_text())
    ann = data["annotations"][1]
    ann["bbox"] = [2, 2, 4, 4]
    if seg == "missing":
        del ann["segmentation"]
    else:
        ann["segmentation"] = seg
    (d / "instances.json").write_text(json.dumps(data))
    q = Project.create(tmp_path / "q")
    with pytest.raises(FormatError, match=r"instances.json: annotation 2 \(image x.png\) has no segmentation "
                                          r"\(a detection-only box\?\)"):
        import_dataset(q, "coco", d / "instances.json")
    assert q.images() == []


def test_coco_size_mismatch_is_a_clear_error(tmp_path):
    d = _foreign_coco(tmp_path)
    data = json.loads((d / "instances.json").read_text())
    data["annotations"][2]["segmentation"]["size"] = [11, 12]
    (d / "instances.json").write_text(json.dumps(data))
    q = Project.create(tmp_path / "q")
    with pytest.raises(SizeMismatchError, match="annotation 3 of x.png"):
        import_dataset(q, "coco", d / "instances.json")
    assert q.images() == []


def test_coco_missing_image_file_needs_the_image_in_the_project(tmp_path):
    d = _foreign_coco(tmp_path)
    shutil.move(d / "images" / "x.png", tmp_path / "x.png")
    q = Project.create(tmp_path / "q")
    with pytest.raises(FormatError, match="no image named 'x.png'"):
        import_dataset(q, "coco", d)
    q.add_image(tmp_path / "x.png")
    import_dataset(q, "coco", d)
    assert q.mask(q.images()[0].id, "imported") is not None


# ----------------------------------------------------------------------------- classes on import
def test_import_into_project_with_annotations_maps_names_and_refuses_unknown(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    q = Project.create(tmp_path / "q", ["background", "dog", "cat"])  # other order, no bird
    img = q.add_image(_save_png(tmp_path / "other.png", np.zeros((4, 4), np.uint8)))
    q.set_tag(img.id, 1, "present")  # now it has annotations: classes are kept
    with pytest.raises(UnknownClassError, match="'bird'.*add_classes=true"):
        import_dataset(q, "png", tmp_path / "out")
    assert len(q.images()) == 1
    import_dataset(q, "png", tmp_path / "out", add_classes="true")
    assert q.class_names == ["background", "dog", "cat", "bird"]
    a = by_stem(q)["a"]
    src_a = src.mask(by_stem(src)["a"].id, "final")
    lut = np.array([0, 2, 1, 3] + [0] * 251 + [255], np.uint8)  # src index -> q index
    np.testing.assert_array_equal(q.mask(a.id, "imported"), lut[src_a])


def test_import_matches_existing_images_by_stem_without_duplicating(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "png", tmp_path / "out")
    n = len(q.images())
    import_dataset(q, "png", tmp_path / "out", kind="final")
    assert len(q.images()) == n
    assert q.mask_info(by_stem(q)["a"].id, "final") is not None


# ----------------------------------------------------------------------------- safety
def test_size_mismatch_in_png_names_the_file_and_changes_nothing(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "out" / "masks" / "c.png")
    q = Project.create(tmp_path / "q")
    with pytest.raises(SizeMismatchError, match=r"masks/c.png.*5x5.*24x24"):
        import_dataset(q, "png", tmp_path / "out")
    assert q.images() == [] and q.counts()["masks"]["imported"] == 0
    assert q.class_names == ["background", "object"]


def test_bad_class_index_in_a_mask_is_an_error(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    bad = np.full((24, 24), 9, np.uint8)
    Image.fromarray(bad).save(tmp_path / "out" / "masks" / "c.png")
    q = Project.create(tmp_path / "q")
    with pytest.raises(FormatError, match=r"masks/c.png: uses class index 9"):
        import_dataset(q, "png", tmp_path / "out")
    assert q.images() == []


def test_duplicate_names_in_a_dataset_are_an_error(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    shutil.copyfile(tmp_path / "out" / "images" / "a.png", tmp_path / "out" / "images" / "a.jpg")
    q = Project.create(tmp_path / "q")
    with pytest.raises(DuplicateNameError, match="a.jpg.*a.png|a.png.*a.jpg"):
        import_dataset(q, "png", tmp_path / "out")
    assert q.images() == []


def test_odd_names_are_sanitised_on_export(tmp_path):
    p = Project.create(tmp_path / "p")
    raw = (tmp_path / "f.png")
    _save_png(raw, np.zeros((6, 6), np.uint8))
    info = p.add_image(raw.read_bytes(), name="../../evil:name?.png")
    p.save_mask(info.id, np.ones((6, 6), np.uint8), "final", source="t")
    for fmt in list_formats():
        out = tmp_path / f"o-{fmt}"
        export_project(p, fmt, out)
        for f in out.rglob("*"):
            assert out.resolve() in f.resolve().parents
            assert not set(f.name) & set(':?*"<>|\\'), f


def test_zip_with_unsafe_paths_is_refused(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../escape.png", b"x")
    q = Project.create(tmp_path / "q")
    with pytest.raises(FormatError, match="unsafe path"):
        import_dataset(q, "png", z)
    assert not (tmp_path / "escape.png").exists()


def test_export_into_a_non_empty_folder_is_refused(src, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(AnnotationError, match="not empty"):
        export_project(src, "coco", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- VOC / YOLO / png specifics
def test_voc_layout_keeps_void_and_uses_palette_pngs(src, tmp_path):
    res = export_project(src, "voc", tmp_path / "out")
    out = tmp_path / "out"
    # the images that were not JPEG are re-encoded (lossy): said, not done silently
    n = sum(1 for i in src.images() if not i.name.lower().endswith((".jpg", ".jpeg")))
    assert n and any(f"note: {n} image(s) were not JPEG and were re-encoded as JPEG" in x for x in res.lines())
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["a.jpg", "b image.jpg", "c.jpg", "d.jpg",
                                                                      "e.jpg"]
    with Image.open(out / "SegmentationClass" / "a.png") as im:
        assert im.mode == "P"
        assert (np.asarray(im) == 255).any()
        assert tuple(im.getpalette()[3 * 255: 3 * 256]) == (224, 224, 192)
        assert tuple(im.getpalette()[9:12]) == (0x12, 0x34, 0x56)
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text().splitlines() == ["a", "b image", "c"]
    assert "bird:18,52,86::" in (out / "labelmap.txt").read_text()


def test_voc_import_without_labelmap_uses_the_voc_classes(tmp_path):
    d = tmp_path / "VOCdevkit" / "VOC2012"
    (d / "JPEGImages").mkdir(parents=True)
    (d / "SegmentationClass").mkdir()
    (d / "ImageSets" / "Segmentation").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(d / "JPEGImages" / "2007_000032.jpg")
    m = np.zeros((6, 7), np.uint8)
    m[1:3, 1:3] = 15
    m[0] = 255
    im = Image.fromarray(m, "L").convert("P")
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(d / "SegmentationClass" / "2007_000032.png")
    (d / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "voc", tmp_path)
    assert q.class_names[15] == "person" and len(q.class_names) == 21
    np.testing.assert_array_equal(q.mask(q.images()[0].id, "imported"), m)
    assert q.image_sets() == ["val"]


def test_yolo_files_follow_the_ultralytics_layout(src, tmp_path):
    export_project(src, "yolo", tmp_path / "out")
    out = tmp_path / "out"
    import yaml

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog", 2: "bird"} and data["nc"] == 3
    assert data["train"] == "images"
    lines = (out / "labels" / "a.txt").read_text().splitlines()
    for ln in lines:
        vals = ln.split()
        assert 0 <= int(vals[0]) < 3 and len(vals) % 2 == 1 and len(vals) >= 7
        assert all(0.0 <= float(v) <= 1.0 for v in vals[1:])
    assert (out / "labels" / "b image.txt").read_text() == ""  # all background: an empty label file
    assert (out / "labels" / "e.txt").is_file()  # strokes only: a pseudo-mask made at export
    export_project(src, "yolo", tmp_path / "final", masks="final")
    assert not (tmp_path / "final" / "images" / "e.png").exists()  # no final mask: left out
    assert (out / "ignore" / "a.txt").is_file()


def test_yolo_import_of_split_folders(tmp_path):
    d = tmp_path / "yolo"
    for split in ("train", "val"):
        (d / "images" / split).mkdir(parents=True)
        (d / "labels" / split).mkdir(parents=True)
    _save_png(d / "images" / "train" / "p.png", np.zeros((10, 20, 3), np.uint8))
    _save_png(d / "images" / "val" / "q.png", np.full((10, 20, 3), 9, np.uint8))
    (d / "labels" / "train" / "p.txt").write_text("1 0 0 0.5 0 0.5 0.5 0 0.5\n")
    (d / "labels" / "val" / "q.txt").write_text("0 0.5 0.5 0.5 0.4\n")  # a box line
    (d / "data.yaml").write_text("path: ../datasets/x\ntrain: images/train\nval: images/val\nnames:\n  - car\n  - bus\n")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "yolo", d)
    assert q.class_names == ["background", "car", "bus"]
    assert q.image_sets() == ["train", "val"]
    mp = q.mask(by_stem(q)["p"].id, "imported")
    want = np.zeros((10, 20), np.uint8)
    want[:5, :10] = 2
    np.testing.assert_array_equal(mp, want)
    mq = q.mask(by_stem(q)["q"].id, "imported")
    assert (mq[3:7, 5:15] == 1).all() and mq.sum() == 40


def test_yolo_bad_line_names_file_and_line(src, tmp_path):
    export_project(src, "yolo", tmp_path / "out")
    (tmp_path / "out" / "labels" / "a.txt").write_text("0 0.1 0.1 0.2\n")
    q = Project.create(tmp_path / "q")
    with pytest.raises(FormatError, match="labels/a.txt line 1"):
        import_dataset(q, "yolo", tmp_path / "out")
    assert q.images() == []


def _yolo_one(tmp_path: Path, names: str, label: bytes) -> Path:
    d = tmp_path / "yolo"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    _save_png(d / "images" / "p.png", np.zeros((10, 20, 3), np.uint8))
    (d / "labels" / "p.txt").write_bytes(label)
    (d / "data.yaml").write_text(f"train: images\nval: images\nnames: {names}\n")
    return d


def test_yolo_negative_class_is_refused_naming_file_and_line(tmp_path):
    d = _yolo_one(tmp_path, "['cat']", b"0 0 0 0.5 0 0.5 0.5\n-1 0 0 0.5 0 0.5 0.5 0 0.5\n")
    q = Project.create(tmp_path / "q")
    with pytest.raises(UnknownClassError, match=r"labels/p.txt line 2: class -1 is not in data.yaml's names"):
        import_dataset(q, "yolo", d)
    assert q.images() == []


def test_yolo_names_that_list_background_are_not_doubled(tmp_path):
    d = _yolo_one(tmp_path, "['background', 'cat', 'dog']", b"2 0 0 0.5 0 0.5 0.5 0 0.5\n")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "yolo", d)
    assert q.class_names == ["background", "cat", "dog"]
    want = np.zeros((10, 20), np.uint8)
    want[:5, :10] = 2  # YOLO class 2 is 'dog'
    np.testing.assert_array_equal(q.mask(q.images()[0].id, "imported"), want)


def test_yolo_label_file_with_a_utf8_bom_is_read(tmp_path):
    d = _yolo_one(tmp_path, "['cat']", b"\xef\xbb\xbf0 0 0 0.5 0 0.5 0.5 0 0.5\r\n")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "yolo", d)
    assert (q.mask(q.images()[0].id, "imported")[:5, :10] == 1).all()


def test_png_color_pngs_hold_the_same_indices_and_colours(src, tmp_path):
    export_project(src, "png", tmp_path / "out")
    with Image.open(tmp_path / "out" / "color" / "a.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")))
        rgb = np.asarray(im.convert("RGB"))
    m = src.mask(by_stem(src)["a"].id, "final")
    assert tuple(rgb[m == 3][0]) == (0x12, 0x34, 0x56)
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels[3] == {"index": 3, "name": "bird", "color": "#123456"}


# ----------------------------------------------------------------------------- masks (plain folder)
def _project_with_images(tmp_path: Path, src: Project, name: str) -> Project:
    return fresh_target(tmp_path, src, "masks", name)


def test_masks_color_mode_round_trip_with_mapping_file(src, tmp_path):
    export_project(src, "masks", tmp_path / "out", mode="color")
    mapping = json.loads((tmp_path / "out" / "mapping.json").read_text())
    assert mapping["#123456"] == "bird" and mapping["#e0e0c0"] == "ignore"
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.mode == "RGB"
    dst = _project_with_images(tmp_path, src, "dst")
    import_dataset(dst, "masks", tmp_path / "out")
    assert_round_trip(src, dst, "masks")


def test_masks_inline_mapping_and_kind(src, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    rgb = np.zeros((40, 56, 3), np.uint8)
    rgb[:10] = (255, 0, 0)
    rgb[30:] = (255, 255, 255)
    _save_png(d / "a.png", rgb)
    dst = _project_with_images(tmp_path, src, "dst")
    import_dataset(dst, "masks", d, mapping='{"#000000": "background", "#ff0000": "object", "#ffffff": "ignore"}',
                   kind="final")
    m = dst.mask(by_stem(dst)["a"].id, "final")
    assert (m[:10] == 1).all() and (m[10:30] == 0).all() and (m[30:] == 255).all()


def test_masks_unknown_colour_and_unmatched_name_are_errors(src, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    rgb = np.zeros((40, 56, 3), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    _save_png(d / "a.png", rgb)
    dst = _project_with_images(tmp_path, src, "dst")
    with pytest.raises(FormatError, match=r"a.png: colour #010203 is not in the colour mapping"):
        import_dataset(dst, "masks", d, mapping='{"#000000": 0}')
    (d / "a.png").unlink()
    _save_png(d / "zzz.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FormatError, match="no image named 'zzz.png'"):
        import_dataset(dst, "masks", d, mapping="index")
    assert dst.counts()["masks"]["imported"] == 0


def test_masks_mapping_project_uses_class_colours(src, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    m = src.mask(by_stem(src)["a"].id, "final")
    lut = np.zeros((256, 3), np.uint8)
    for c in src.classes():
        lut[c.idx] = c.color
    lut[255] = (224, 224, 192)
    _save_png(d / "a.png", lut[m])
    dst = Project.create(tmp_path / "dst", CLASSES)
    dst.recolor_class(3, "#123456")
    dst.add_image(src.root / by_stem(src)["a"].file, name="a.png")
    import_dataset(dst, "masks", d, mapping="project")
    np.testing.assert_array_equal(dst.mask(dst.images()[0].id, "imported"), m)


# ----------------------------------------------------------------------------- weak
def test_weak_export_files(src, tmp_path):
    export_project(src, "weak", tmp_path / "out")
    out = tmp_path / "out"
    tags = json.loads((out / "tags.json").read_text())
    assert tags["tags"]["e"] == {"cat": "present", "dog": "absent"}
    assert "e,cat,present" in (out / "tags.csv").read_text()
    layer_dirs = sorted(p.name for p in (out / "scribbles").iterdir())
    assert layer_dirs == ["default", "x"]  # "my layer/../x" sanitised to a safe folder name
    man = json.loads((out / "manifest.json").read_text())
    assert man["layers"]["x"] == "my layer/../x"


def test_weak_import_from_tags_csv_only(src, tmp_path):
    export_project(src, "weak", tmp_path / "out")
    (tmp_path / "out" / "tags.json").unlink()
    dst = Project.create(tmp_path / "dst")
    import_dataset(dst, "weak", tmp_path / "out")
    assert_round_trip(src, dst, "weak")


def test_export_options_are_validated():
    with pytest.raises(AnnotationError, match="--masks"):
        ExportOptions(masks="all")


def test_names_differing_only_in_case_get_a_unique_name_and_old_clashes_say_how_to_rename(tmp_path, capsys):
    from segmenter.cli import main

    p = Project.create(tmp_path / "p")
    for k, name in enumerate(["Cat.png", "cat.png"]):
        p.add_image(_save_png(tmp_path / f"f{k}.png", np.full((4, 4), k, np.uint8)), name=name)
    assert [i.name for i in p.images()] == ["Cat.png", "cat_2.png"]  # one file on Windows / macOS otherwise
    export_project(p, "png", tmp_path / "ok")
    # A project made before names were unique ignoring case: the error quotes both stems as written,
    # and names the command that renames one.
    with p.transaction() as conn:
        conn.execute("UPDATE images SET name = 'cat.png' WHERE name = 'cat_2.png'")
    with pytest.raises(DuplicateNameError, match="'Cat.png' and 'cat.png' would both be written as 'Cat' and 'cat', "
                                                 ".*rename-image PROJECT 'cat.png' NEW_NAME"):
        export_project(p, "png", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["rename-image", str(p.root), "cat.png", "CAT"]) == 2  # Cat.png has that name, ignoring case
    assert "Cat.png has that name" in capsys.readouterr().err
    assert main(["rename-image", str(p.root), "cat.png", "kitten"]) == 0
    assert [i.name for i in p.images()] == ["Cat.png", "kitten.png"]
    export_project(p, "png", tmp_path / "out")


@pytest.mark.parametrize("fmt", ["png", "coco", "voc", "yolo"])
def test_images_none_exports_labels_only_and_imports_onto_existing_images(fmt, src, tmp_path):
    export_project(src, fmt, tmp_path / "out", images="none")
    out = tmp_path / "out"
    assert not (out / "images").exists() and not any((out / "JPEGImages").glob("*"))
    dst = Project.create(tmp_path / "dst")
    for info in src.images():
        dst.add_image(src.root / info.file, name=info.name)
    import_dataset(dst, fmt, tmp_path / "out")
    want = {i.stem: (src.best_mask(i.id) or (None,))[0] for i in src.images()}
    assert_masks_equal(dst, want, fmt)


@pytest.mark.parametrize("fmt", [f for f in list_formats() if get_format(f).can_import and "masks" in carries(f)
                                 and getattr(get_format(f), "carries_images", True) is not False])
def test_same_pixels_with_labels_of_their_own_stay_two_images(fmt, tmp_path):
    """A dataset can hold two samples with equal pixels but different labels (ACDC does): every
    format keeps both images and both masks instead of merging them."""
    src = Project.create(tmp_path / "twins", ["bg", "a"])
    pixels = np.random.default_rng(3).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    ids = []
    for k, name in enumerate(["left.png", "right.png"]):
        path = _save_png(tmp_path / name, pixels)
        info = src.add_image(path, allow_same_content=bool(k))
        m = np.zeros((20, 24), np.uint8)
        m[2 + 5 * k : 8 + 5 * k, 3:10] = 1
        src.save_mask(info.id, m, "imported", source="test")
        ids.append(info.id)
    want = {src.image_info(i).stem: src.mask(i, "imported") for i in ids}
    dst = export_import(src, fmt, tmp_path)
    assert len(dst.images()) == 2, fmt
    assert_masks_equal(dst, want, fmt)


# ----------------------------------------------------------------------------- bug-hunt regressions
def _two_image_project(root: Path, classes=("background", "obj")) -> Project:
    p = Project.create(root / "proj", list(classes))
    rng = np.random.default_rng(0)
    for n in ("a", "b"):
        info = p.add_image(_save_png(root / f"{n}.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)))
        m = np.zeros((20, 30), np.uint8)
        m[:5] = 1
        m[15:, :4] = 255
        p.save_mask(info.id, m, "final", source="t")
    return p


def test_voc_rgb_masks_are_mapped_by_the_colours_of_labels_json(tmp_path):
    p = _two_image_project(tmp_path)
    export_project(p, "voc", tmp_path / "voc")
    assert (tmp_path / "voc" / "labels.json").is_file()
    for f in (tmp_path / "voc" / "SegmentationClass").glob("*.png"):  # re-saved by an editor as RGB
        Image.open(f).convert("RGB").save(f)
    q = Project.create(tmp_path / "q")
    assert import_dataset(q, "voc", tmp_path / "voc").masks == 2
    for info in p.images():
        np.testing.assert_array_equal(q.mask(by_stem(q)[info.stem].id, "imported"), p.mask(info.id, "final"))


def test_masks_palette_png_with_a_colour_mapping_is_read_by_its_colours(tmp_path):
    (tmp_path / "masks").mkdir()
    _save_png(tmp_path / "x.png", np.zeros((4, 6, 3), np.uint8))
    p = Project.create(tmp_path / "proj", ["background", "RV", "MYO", "LV"])
    info = p.add_image(tmp_path / "x.png")
    col = {c.name: c.color for c in p.classes()}
    idx = np.zeros((4, 6), np.uint8)
    idx[:, :3] = 1  # palette entry 1 = LV's colour
    im = Image.fromarray(idx, "P")
    im.putpalette(list(col["background"]) + list(col["LV"]) + [0] * (768 - 6))
    im.save(tmp_path / "masks" / "x.png")
    import_dataset(p, "masks", tmp_path / "masks", mapping="project")
    got = p.mask(info.id, "imported")
    assert (got[:, :3] == 3).all() and (got[:, 3:] == 0).all()
    # Without a colour mapping a palette PNG is still read by its indices (VOC's convention).
    import_dataset(p, "masks", tmp_path / "masks", mapping="index", kind="final")
    assert (p.mask(info.id, "final")[:, :3] == 1).all()


@pytest.mark.parametrize("fmt", ["png", "coco", "voc", "yolo", "weak", "folder"])
def test_a_same_named_image_of_another_picture_is_added_not_given_the_labels(fmt, tmp_path):
    """Another project's a.png (same size, other pixels): its labels never land on this project's a.png."""
    rng = np.random.default_rng(0)
    projects = []
    for k in (1, 2):
        (tmp_path / f"s{k}").mkdir()
        p = Project.create(tmp_path / f"p{k}", ["background", "obj"])
        info = p.add_image(_save_png(tmp_path / f"s{k}" / "a.png", rng.integers(0, 255, (20, 30, 3), np.uint8)))
        m = np.zeros((20, 30), np.uint8)
        m[(slice(None, 5) if k == 1 else slice(10, None))] = 1
        p.save_mask(info.id, m, "final", source=f"person {k}")
        p.save_scribbles(info.id, m, layer="default")
        p.set_tag(info.id, 1, "present")
        projects.append((p, info, m))
    (p1, i1, m1), (p2, i2, m2) = projects
    export_project(p2, fmt, tmp_path / "out")
    s = import_dataset(p1, fmt, tmp_path / "out", **({"kind": "final"} if "masks" in carries(fmt) else {}))
    ext = ".jpg" if fmt == "voc" else ".png"  # VOC carries JPEG copies
    assert sorted(i.name for i in p1.images()) == ["a.png", f"a_2{ext}"], fmt
    np.testing.assert_array_equal(p1.mask(i1.id, "final"), m1)
    np.testing.assert_array_equal(p1.scribbles(i1.id, "default"), m1)
    new = p1.image_by_name(f"a_2{ext}")
    if "masks" in carries(fmt):
        np.testing.assert_array_equal(p1.mask(new.id, "final"), m2)
    assert any("another picture than the project's a.png" in n and f"a_2{ext}" in n for n in s.notes), s.notes


def test_voc_reimport_into_the_same_project_matches_its_jpeg_copies(tmp_path):
    """VOC re-encodes PNG images as JPEG: the export's manifest records which project image each
    came from, so importing it back puts the masks on those images instead of adding copies."""
    p = _two_image_project(tmp_path)
    export_project(p, "voc", tmp_path / "voc")
    s = import_dataset(p, "voc", tmp_path / "voc")
    # unchanged masks: skipped (their final masks stay the only ones), as the folder format does
    assert [i.name for i in p.images()] == ["a.png", "b.png"] and s.masks == 0, s.lines()
    assert s.notes == ["note: masks compared with the export's (manifest.json): 2 unchanged masks skipped"]
    assert all(p.mask(i.id, "imported") is None for i in p.images())


@pytest.mark.parametrize("fmt", ["coco", "voc", "png", "masks", "yolo"])
def test_an_unchanged_export_imported_back_keeps_the_kinds_and_an_edited_mask_becomes_final(tmp_path, fmt):
    """Re-importing an export of this project: an unchanged pseudo-mask stays pseudo (it became
    `imported`, which training takes as an exact label by default); an edited one becomes final."""
    p = _two_image_project(tmp_path)
    a, b = p.image_ids()
    pseudo = p.mask(a, "final").copy()
    p.clear_mask(a, "final")
    p.clear_mask(b, "final")
    p.save_mask(a, pseudo, "pseudo", source="hybrid")
    p.save_mask(b, pseudo, "predicted", source="model")
    out = tmp_path / "out"
    export_project(p, fmt, out)
    lines = import_dataset(p, fmt, out).lines()
    assert p.statuses() == {a: "pseudo", b: "predicted"}, fmt
    # the summary says the images were found in the project (as the folder format's import does)
    assert lines[1] == "2 images already in the project: their labels were merged", lines
    assert p.mask_info(a, "imported") is None and p.mask_info(b, "imported") is None
    if fmt != "masks":
        return
    # someone edits b's mask (an index PNG of the masks export) in another tool: it comes back as b's final mask
    edited = pseudo.copy()
    edited[10:, 10:20] = 1
    export_project(p, fmt, tmp_path / "out2")
    _save_png(tmp_path / "out2" / "b.png", edited)
    s = import_dataset(p, fmt, tmp_path / "out2")
    np.testing.assert_array_equal(p.mask(b, "final"), edited)
    assert p.statuses() == {a: "pseudo", b: "final"}
    assert "became its image's final mask (b.png)" in " ".join(s.notes), s.notes


def test_yolo_data_yaml_is_utf8_and_old_surrogate_escapes_import(tmp_path):
    import yaml

    p = Project.create(tmp_path / "p", ["background", "cat \U0001f431", "\U00020000 plant"])
    info = p.add_image(_save_png(tmp_path / "x.png", np.zeros((20, 30, 3), np.uint8)))
    m = np.zeros((20, 30), np.uint8)
    m[:5] = 1
    m[10:] = 2
    p.save_mask(info.id, m, "final", source="t")
    export_project(p, "yolo", tmp_path / "y")
    text = (tmp_path / "y" / "data.yaml").read_text(encoding="utf-8")
    assert "cat \U0001f431" in text and "\\ud83d" not in text
    assert list(yaml.safe_load(text)["names"].values()) == ["cat \U0001f431", "\U00020000 plant"]
    q = Project.create(tmp_path / "q")
    import_dataset(q, "yolo", tmp_path / "y")
    assert q.class_names == p.class_names
    # A data.yaml written by an older export (JSON surrogate-pair escapes) imports with the real names.
    (tmp_path / "y" / "data.yaml").write_text(text.replace("\U0001f431", "\\ud83d\\udc31"), encoding="utf-8")
    (tmp_path / "y" / "labels.json").unlink()
    r = Project.create(tmp_path / "r")
    import_dataset(r, "yolo", tmp_path / "y")
    assert r.class_names == p.class_names
    # Half a character is one clear error naming the file, not a traceback.
    (tmp_path / "y" / "data.yaml").write_text(text.replace("\U0001f431", "\\ud83d"), encoding="utf-8")
    with pytest.raises(FormatError, match=r"data.yaml: the class name .* unpaired"):
        import_dataset(Project.create(tmp_path / "t"), "yolo", tmp_path / "y")


@pytest.mark.parametrize("fmt, sub", [("png", "masks"), ("voc", "SegmentationClass"), ("masks", "."),
                                      ("weak", "scribbles/default"), ("folder", "masks")])
def test_upper_case_png_label_files_are_read(fmt, sub, tmp_path):
    p = _two_image_project(tmp_path)
    for info in p.images():
        p.save_scribbles(info.id, p.mask(info.id, "final"), layer="default")
    out = tmp_path / "out"
    export_project(p, fmt, out)
    (out / sub / "b.png").rename(out / sub / "b.PNG")  # as Windows tools write them
    q = Project.create(tmp_path / "q", ["background", "obj"])
    if fmt == "masks":
        for info in p.images():
            q.add_image(p.root / info.file, name=info.name)
    s = import_dataset(q, fmt, out)
    assert not s.skipped, s.lines()
    b = by_stem(q)["b"]
    if fmt == "weak":
        assert q.scribbles(b.id, "default") is not None
    else:
        np.testing.assert_array_equal(q.mask(b.id, "imported"), p.mask(p.image_by_name("b.png").id, "final"))


@pytest.mark.parametrize("fmt", ["folder", "weak"])
def test_layers_that_make_one_folder_name_stay_distinct(fmt, tmp_path):
    p = _two_image_project(tmp_path)
    info = p.images()[0]
    s1 = np.full((20, 30), 255, np.uint8)
    s1[0, 0] = 1
    s2 = np.full((20, 30), 255, np.uint8)
    s2[5, 5] = 0
    for layer, scr in (("r1/a", s1), ("r2/a", s2), ("A", s1)):
        p.save_scribbles(info.id, scr, layer=layer)
    res = export_project(p, fmt, tmp_path / "out")
    assert res.scribbles == 3
    assert sorted(d.name for d in (tmp_path / "out" / "scribbles").iterdir()) == ["A", "a_2", "a_3"]
    q = Project.create(tmp_path / "q", ["background", "obj"])
    import_dataset(q, fmt, tmp_path / "out")
    qi = q.image_by_name(info.name)
    assert sorted(q.scribble_layers()) == sorted(p.scribble_layers())
    np.testing.assert_array_equal(q.scribbles(qi.id, "r1/a"), s1)
    np.testing.assert_array_equal(q.scribbles(qi.id, "r2/a"), s2)


def test_folder_and_weak_exports_write_the_same_scribble_files(src, tmp_path):
    """Both write their scribbles with one helper; the files are the same, byte for byte, and the
    weak manifest records the version of each one written."""
    src.save_scribbles(src.images()[0].id, np.full(src.scribbles(src.images()[0].id, "my layer/../x").shape, 255,
                                                   np.uint8), layer="my layer/../x")  # a second version
    files = {}
    for fmt in ("folder", "weak"):
        res = export_project(src, fmt, tmp_path / fmt)
        root = tmp_path / fmt / "scribbles"
        files[fmt] = {f.relative_to(root).as_posix(): f.read_bytes() for f in sorted(root.rglob("*.png"))}
        assert res.scribbles == len(files[fmt]) == 2
    assert files["folder"] == files["weak"]
    man = json.loads((tmp_path / "weak" / "manifest.json").read_text())
    assert man["scribbles"] == {"a": {"my layer/../x": {"version": 2}}, "e": {"default": {"version": 1}}}


def test_folder_export_carries_image_level_tags(tmp_path):
    p = _two_image_project(tmp_path)
    p.set_tag(p.images()[1].id, 1, "present")
    p.set_tag(p.images()[1].id, 0, "absent")
    res = export_project(p, "folder", tmp_path / "out")
    assert any("tags of 1 image(s)" in n for n in res.notes)
    q = Project.create(tmp_path / "q")
    s = import_dataset(q, "folder", tmp_path / "out")
    assert q.tags(q.image_by_name("b.png").id) == {1: "present", 0: "absent"}
    assert any("2 image-level tag(s)" in n for n in s.notes), s.notes


def test_voc_round_trip_invents_no_image_set_and_yolo_uses_train_and_val_sets(tmp_path):
    p = _two_image_project(tmp_path)
    export_project(p, "voc", tmp_path / "voc")
    q = Project.create(tmp_path / "q")
    import_dataset(q, "voc", tmp_path / "voc")
    assert q.image_sets() == []
    export_project(p, "yolo", tmp_path / "y1")
    assert 'train: "images"' in (tmp_path / "y1" / "data.yaml").read_text()
    ids = [i.id for i in p.images()]
    p.add_to_set("train", ids[:1])
    p.add_to_set("val", ids[1:])
    export_project(p, "yolo", tmp_path / "y2")
    text = (tmp_path / "y2" / "data.yaml").read_text()
    assert 'train: "train.txt"' in text and 'val: "val.txt"' in text
    assert (tmp_path / "y2" / "train.txt").read_text() == "./images/a.png\n"


def test_weak_and_png_reimports_keep_newer_strokes_and_tags_and_skip_unchanged_labels(tmp_path):
    """apply_import (weak: strokes and tags; png: masks) follows the folder import's rule: labels
    equal to the stored ones are no new version; strokes and tags changed in the project since the
    export are kept (one note), unless --option scribbles=replace / tags=replace."""
    p = _two_image_project(tmp_path)
    a, b = p.images()
    s = np.full((20, 30), 255, np.uint8)
    s[2, 2:9] = 1
    for info in (a, b):
        p.save_scribbles(info.id, s, layer="real")
        p.set_tag(info.id, 1, "present")
    export_project(p, "weak", tmp_path / "weak")
    export_project(p, "png", tmp_path / "png", masks="final")
    drawn = s.copy()
    drawn[10, 3:20] = 0  # strokes drawn after the export
    p.save_scribbles(a.id, drawn, layer="real")
    p.set_tag(b.id, 1, "absent")
    p.set_tag(b.id, 0, "present")
    res = import_dataset(p, "weak", tmp_path / "weak")
    assert res.scribbles == 0, res.lines()
    np.testing.assert_array_equal(p.scribbles(a.id, "real"), drawn)
    assert p.scribble_version(a.id, "real") == 2 and p.scribble_version(b.id, "real") == 1
    assert p.tags(b.id) == {0: "present", 1: "absent"}
    assert [n for n in res.notes if "differ" in n] == [
        "note: 2 image(s) already in the project have strokes (1) or tags (1) that differ from the dataset's; the "
        "project's were kept (to take the dataset's instead, import again with --option scribbles=replace "
        "--option tags=replace)"]
    res = import_dataset(p, "png", tmp_path / "png", kind="final")
    assert res.masks == 0 and len(p.mask_history(a.id, "final")) == 1, res.lines()
    res = import_dataset(p, "weak", tmp_path / "weak", scribbles="replace", tags="replace")
    assert res.scribbles == 1 and not [n for n in res.notes if "differ" in n], res.lines()
    np.testing.assert_array_equal(p.scribbles(a.id, "real"), s)
    assert p.tags(b.id) == {0: "present", 1: "present"}
    with pytest.raises(FormatError, match="option tags=mine: must be one of keep, replace"):
        import_dataset(p, "weak", tmp_path / "weak", tags="mine")


def test_best_masks_export_a_prediction_corrected_by_strokes_drawn_after_it(tmp_path):
    """export --masks best exported a predicted mask made before newer strokes, contradicting them;
    now it is corrected by them at export (as predict corrects), with one note. A prediction that
    newer strokes do not contradict (the same strokes saved again) is exported as stored."""
    import time

    p = Project.create(tmp_path / "proj", ["background", "obj"])
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200  # obj is the bright right half
    ids = [p.add_image(_save_png(tmp_path / f"{n}.png", img + k)).id for k, n in enumerate("ab")]
    pred = np.zeros((20, 30), np.uint8)  # the model missed obj
    conf = np.full((20, 30), 0.6, np.float32)
    for i in ids:
        p.save_mask(i, pred, "predicted", source="model:unet/resnet18", confidence=conf)
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 20:26] = 1  # drawn after the prediction
    p.save_scribbles(ids[0], scr)
    same = np.full((20, 30), 255, np.uint8)
    same[2:4, 2:6] = 0  # agrees with the prediction
    p.save_scribbles(ids[1], same)
    for fmt in ("png", "folder", "coco"):
        res = export_project(p, fmt, tmp_path / fmt)
        assert [n for n in res.notes if "contradicted strokes" in n] == [
            "note: 1 predicted mask(s) contradicted strokes drawn after the prediction; exported corrected by those "
            "strokes (to store the corrected masks in the project too, run python -m segmenter predict PROJECT "
            "again)"], (fmt, res.lines())
    got = Project.create(tmp_path / "q", ["background", "obj"])
    import_dataset(got, "png", tmp_path / "png")
    a, b = (got.mask(got.image_by_name(n).id, "imported") for n in ("a.png", "b.png"))
    assert (a[8:12, 20:26] == 1).all() and (a[:, :10] == 0).all()  # the strokes, and what none contradicts
    np.testing.assert_array_equal(b, pred)
    manifest = json.loads((tmp_path / "folder" / "manifest.json").read_text())
    assert manifest["masks"]["a"]["kind"] == "predicted" and "at export" in manifest["masks"]["a"]["source"]
    assert manifest["masks"]["b"]["source"] == "model:unet/resnet18"
    coco = Project.create(tmp_path / "c", ["background", "obj"])
    import_dataset(coco, "coco", tmp_path / "coco")
    assert (coco.mask(coco.image_by_name("a.png").id, "imported")[8:12, 20:26] == 1).all()
    # Stored unchanged; a final mask wins as before.
    np.testing.assert_array_equal(p.mask(ids[0], "predicted"), pred)
    p.save_mask(ids[0], pred, "final", source="review")
    res = export_project(p, "png", tmp_path / "png2")
    assert not [n for n in res.notes if "contradicted" in n], res.lines()


def _horse_like_project(tmp_path, names="ab"):
    """Images with a bright object on the right half (class 'obj'), 20x30."""
    p = Project.create(tmp_path / "proj", ["background", "obj"])
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200
    ids = [p.add_image(_save_png(tmp_path / f"{n}.png", img + k)).id for k, n in enumerate(names)]
    return p, ids


@pytest.mark.parametrize("masks", ["best", "final"])
def test_export_corrects_a_final_mask_older_than_strokes_drawn_after_it(masks, tmp_path):
    """A final mask accepted before the latest strokes (drawn after Accept, not accepted again) was
    exported as stored, contradicting them (9-12 % of the stroke pixels in the bug report); now both
    --masks best and --masks final export it corrected by them (still kind 'final', its source
    marked), with one note counting them. A final mask that newer strokes do not contradict, and
    one accepted after the strokes, are exported as stored."""
    import time

    p, (a, b, c) = _horse_like_project(tmp_path, "abc")
    final = np.zeros((20, 30), np.uint8)
    final[:, 15:] = 1  # right as accepted
    for i in (a, b):
        p.save_mask(i, final, "final", source="app:accepted-preview(hybrid)")
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 3:9] = 1  # drawn after Accept: obj where the final says background
    p.save_scribbles(a, scr)
    agree = np.full((20, 30), 255, np.uint8)
    agree[2:4, 20:26] = 1
    p.save_scribbles(b, agree)
    p.save_scribbles(c, scr)
    time.sleep(0.01)
    p.save_mask(c, final, "final", source="review")  # accepted after its strokes: as stored
    res = export_project(p, "folder", tmp_path / "out", masks=masks)
    assert [n for n in res.notes if "final mask(s)" in n] == [
        "note: 1 final mask(s) contradicted strokes drawn after they were accepted; exported corrected by those "
        "strokes (python -m segmenter status counts the final masks older than strokes: review them and accept "
        "again to store what you want)"], res.lines()
    got = imageio_read(tmp_path / "out" / "masks" / "a.png")
    drawn = scr != 255
    assert (got[drawn] == scr[drawn]).all(), "the exported final contradicts a stroke drawn after it"
    assert (got[:, 15:] == 1).all() and (got[:, :2] == 0).all()  # where no stroke says otherwise: the final
    for stem in ("b", "c"):
        np.testing.assert_array_equal(imageio_read(tmp_path / "out" / "masks" / f"{stem}.png"), final)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())["masks"]
    assert man["a"]["kind"] == "final" and man["a"]["source"] == \
        "app:accepted-preview(hybrid)+hybrid(strokes of 'default' at export)"
    assert man["b"]["source"] == "app:accepted-preview(hybrid)" and man["c"]["source"] == "review"
    np.testing.assert_array_equal(p.mask(a, "final"), final)  # the project is not changed
    assert p.finals_older_than_strokes() == [a, b]


def test_export_corrects_a_pseudo_mask_older_than_strokes_drawn_after_it(tmp_path):
    """A stored pseudo-mask (python -m segmenter pseudo, or masks from tags) made before the latest
    strokes was exported as stored by --masks best, contradicting them; now it is corrected by them
    (still kind 'pseudo', its source marked), with a note saying how to store it."""
    import time

    p, (a, b) = _horse_like_project(tmp_path, "ab")
    old = np.zeros((20, 30), np.uint8)
    old[:, 15:] = 1
    for i in (a, b):
        p.save_mask(i, old, "pseudo", source="hybrid")
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 3:9] = 1  # drawn after the pseudo-mask: obj where it says background
    p.save_scribbles(a, scr)
    res = export_project(p, "folder", tmp_path / "out", masks="best")
    assert [n for n in res.notes if "pseudo-mask(s) contradicted" in n] == [
        "note: 1 pseudo-mask(s) contradicted strokes drawn after they were made; exported corrected by those "
        "strokes (to store them, run python -m segmenter pseudo PROJECT again)"], res.lines()
    got = imageio_read(tmp_path / "out" / "masks" / "a.png")
    drawn = scr != 255
    assert (got[drawn] == scr[drawn]).all(), "the exported pseudo-mask contradicts a stroke drawn after it"
    np.testing.assert_array_equal(imageio_read(tmp_path / "out" / "masks" / "b.png"), old)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())["masks"]
    assert man["a"]["kind"] == "pseudo" and man["a"]["source"] == "hybrid+hybrid(strokes of 'default' at export)"


def imageio_read(path):
    from annotations import imageio

    return imageio.read_label_map(path)


def test_best_export_makes_a_pseudo_mask_from_strokes_without_a_stored_mask(tmp_path):
    """--masks best wrote no mask for an image with strokes and no stored mask (the app stores the
    live preview only on Accept) and said nothing; now it writes the pseudo-mask of the strokes
    that `python -m segmenter pseudo` would store (the same function, default method; strokes of a
    class tagged absent left out), kind 'pseudo' in manifest.json, with a note. --masks final
    stays final-only and says how many images have strokes but no final mask."""
    from segmenter.commands.pseudo import pseudo_project

    p, (a, b, c, d) = _horse_like_project(tmp_path, "abcd")
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 20:26] = 1
    scr[8:12, 2:6] = 0
    p.save_scribbles(a, scr)
    p.save_scribbles(b, scr)
    p.set_tag(b, 1, "absent")  # the tag wins over b's obj stroke
    p.save_mask(c, np.ones((20, 30), np.uint8), "final", source="review")
    res = export_project(p, "png", tmp_path / "best")
    assert res.masks == 3 and res.mask_kinds == {"final": 1, "pseudo": 2}, res.lines()
    assert [n for n in res.notes if "no stored mask" in n] == [
        "note: 2 image(s) have strokes but no stored mask; exported with a pseudo-mask made from their strokes at "
        "export (hybrid, kind 'pseudo' in manifest.json; python -m segmenter pseudo PROJECT stores them, Accept in "
        "the app makes one final)"], res.lines()
    man = json.loads((tmp_path / "best" / "manifest.json").read_text())["masks"]
    assert man["a"]["kind"] == "pseudo" and man["a"]["source"] == "hybrid(strokes of 'default' at export)"
    assert set(man) == {"a", "b", "c"}  # d: no strokes, no mask
    exported_b = imageio_read(tmp_path / "best" / "masks" / "b.png")
    assert (exported_b == 0).all()  # obj tagged absent: its stroke is left out
    pseudo_project(p, image_ids=[a])  # what the pseudo command stores
    np.testing.assert_array_equal(imageio_read(tmp_path / "best" / "masks" / "a.png"), p.mask(a, "pseudo"))
    res = export_project(p, "png", tmp_path / "final", masks="final")
    assert res.masks == 1 and res.mask_kinds == {"final": 1}
    assert [n for n in res.notes if "no final mask" in n] == [
        "note: 2 image(s) have strokes but no final mask; exported without a mask (accept them in the app, or "
        "export --masks best for a mask made from the strokes)"], res.lines()
    # a stored pseudo-mask is exported as stored: nothing made at export
    res = export_project(p, "coco", tmp_path / "coco")
    assert res.mask_kinds == {"final": 1, "pseudo": 2} and len([n for n in res.notes if "no stored mask" in n]) == 1


def test_export_summary_says_which_kinds_of_mask_went_out(tmp_path, capsys):
    """The summary said 'exported 20 image(s), 20 mask(s)' whatever the masks were (raw model
    output included); now it breaks the masks down by kind (ExportResult.mask_kinds, printed by
    the CLI and the app's message), and ExportResult keeps its fields."""
    from segmenter.cli import main

    p, ids = _horse_like_project(tmp_path, "abcde")
    m = np.zeros((20, 30), np.uint8)
    p.save_mask(ids[0], m, "final", source="review")
    p.save_mask(ids[1], m, "predicted", source="model")
    p.save_mask(ids[2], m, "predicted", source="model")
    p.save_mask(ids[3], m, "imported", source="import")
    res = export_project(p, "masks", tmp_path / "out")
    assert (res.images, res.masks, res.scribbles, res.mask_kinds) == (0, 4, 0, {"final": 1, "imported": 1,
                                                                             "predicted": 2})
    assert res.lines()[0] == f"exported 0 image(s), 4 mask(s) (1 final, 1 imported, 2 predicted), 0 scribble map(s) " \
                             f"to {tmp_path / 'out'}"
    assert main(["export", str(p.root), "--format", "yolo", "--masks", "final", "--out", str(tmp_path / "y")]) == 0
    assert "exported 1 image(s), 1 mask(s) (1 final), 0 scribble map(s)" in capsys.readouterr().out
    res = export_project(p, "weak", tmp_path / "weak")
    assert res.masks == 0 and res.lines()[0].startswith("exported 5 image(s), 0 mask(s), 0 scribble map(s) to ")


def test_export_leaves_a_final_mask_alone_when_another_layers_strokes_are_newer(tmp_path):
    """A final mask accepted from the strokes of layer 'default' was exported corrected by layer
    'real' (a dataset's scribbles imported after it), contradicting the strokes it was made from.
    Only the image's stroke layer counts ('default' here); an image whose only strokes are in
    'real' is still corrected by them, and the status count agrees with the export."""
    import time

    p, (a, b) = _horse_like_project(tmp_path, "ab")
    final = np.zeros((20, 30), np.uint8)
    final[:, 15:] = 1
    own = np.full((20, 30), 255, np.uint8)
    own[2:4, 20:26] = 1
    p.save_scribbles(a, own)
    time.sleep(0.01)
    for i in (a, b):
        p.save_mask(i, final, "final", source="app:accepted-preview(hybrid)")
    time.sleep(0.01)
    real = np.full((20, 30), 255, np.uint8)
    real[8:12, 3:9] = 1  # contradicts the finals
    p.save_scribbles(a, real, layer="real")
    p.save_scribbles(b, real, layer="real")
    res = export_project(p, "folder", tmp_path / "out", masks="final")
    np.testing.assert_array_equal(imageio_read(tmp_path / "out" / "masks" / "a.png"), final)
    got_b = imageio_read(tmp_path / "out" / "masks" / "b.png")
    assert (got_b[real != 255] == 1).all()
    assert [n for n in res.notes if "final mask(s)" in n][0].startswith("note: 1 final mask(s) contradicted")
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())["masks"]
    assert man["a"]["source"] == "app:accepted-preview(hybrid)"
    assert man["b"]["source"] == "app:accepted-preview(hybrid)+hybrid(strokes of 'real' at export)"
    assert p.finals_older_than_strokes() == [b] and p.counts()["finals_older_than_strokes"] == 1


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_final_export_says_left_out_for_formats_that_leave_maskless_images_out(fmt, tmp_path):
    """`export --format yolo --masks final` said both "N image(s) without a final mask left out" and
    "N image(s) have strokes but no final mask; exported without a mask"; the second now says they
    were left out too."""
    p, (a, b) = _horse_like_project(tmp_path, "ab")
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 20:26] = 1
    scr[8:12, 2:6] = 0
    p.save_scribbles(a, scr)
    final = np.zeros((20, 30), np.uint8)
    final[:, 15:] = 1
    p.save_mask(b, final, "final", source="review")
    res = export_project(p, fmt, tmp_path / "out", masks="final")
    assert [n for n in res.notes if "no final mask" in n] == [
        "note: 1 image(s) have strokes but no final mask; left out (accept them in the app, or export --masks best "
        "for a mask made from the strokes)"], res.lines()
    assert not [n for n in res.lines() if "exported without a mask" in n]


@pytest.mark.parametrize("kind", ["final", "predicted", "imported"])
def test_export_resegments_a_mask_showing_a_class_tagged_absent(kind, tmp_path):
    """A stored mask showing a class the image was tagged absent afterwards was exported as stored,
    beside tags.json saying absent; now those pixels are re-segmented without the class (kind kept,
    source marked, one note counting the images), and `status` counts such images."""
    from segmenter.cli import main

    p, (a, b) = _horse_like_project(tmp_path, "ab")
    p.add_class("car")
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 1
    mask[:, 24:] = 2  # "car" on part of the object
    for i in (a, b):
        p.save_mask(i, mask, kind, source="model-x")
    p.set_tag(a, 2, "absent")  # tagged after the mask was made
    assert p.masks_showing_absent() == [a] and p.counts()["masks_showing_absent"] == 1
    res = export_project(p, "folder", tmp_path / "out", masks="best")
    got = imageio_read(tmp_path / "out" / "masks" / "a.png")
    assert not (got == 2).any(), "the export shows a class the image is tagged absent"
    assert (got[:, :13] == 0).all() and (got[:, 16:23] == 1).all()  # the rest as stored
    np.testing.assert_array_equal(imageio_read(tmp_path / "out" / "masks" / "b.png"), mask)
    assert [n for n in res.notes if "tagged absent" in n] == [
        "note: 1 mask(s) showed a class the image is tagged absent (tagged after the mask was made); exported with "
        "those pixels re-segmented without that class (kind kept, source marked in manifest.json; python -m "
        "segmenter status counts them: predict again, or review and accept again)"], res.lines()
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())["masks"]
    assert man["a"]["kind"] == kind and man["a"]["source"] == "model-x+hybrid(without 'car', tagged absent, at export)"
    assert man["b"]["source"] == "model-x"
    np.testing.assert_array_equal(p.mask(a, kind), mask)  # the project is not changed
    assert main(["status", str(p.root)]) == 0


def test_a_weak_prediction_showing_a_class_tagged_absent_is_resegmented_not_left_unlabelled(tmp_path):
    """With no confident pixel to seed from (a prediction of a model trained an epoch or two), the
    pixels of the class tagged absent were left 255 (unlabelled) though the note said re-segmented
    (bug hunt 44, #7): the mask's own labels are the seeds then; a mask of that class alone takes the
    one class left."""
    p, (a, b) = _horse_like_project(tmp_path, "ab")
    p.add_class("car")
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 1
    mask[:, 24:] = 2
    p.save_mask(a, mask, "predicted", source="model-x", confidence=np.full((20, 30), 0.4, np.float32))
    p.set_tag(a, 2, "absent")
    only = np.full((20, 30), 2, np.uint8)  # b: the prediction shows nothing but car
    p.save_mask(b, only, "predicted", source="model-x", confidence=np.full((20, 30), 0.4, np.float32))
    p.set_tag(b, 2, "absent")
    p.set_tag(b, 1, "absent")
    export_project(p, "folder", tmp_path / "out", masks="best")
    got = imageio_read(tmp_path / "out" / "masks" / "a.png")
    assert not (got == 2).any() and not (got == 255).any()
    assert (got[:, :13] == 0).all() and (got[:, 16:23] == 1).all()
    np.testing.assert_array_equal(imageio_read(tmp_path / "out" / "masks" / "b.png"), np.zeros((20, 30), np.uint8))


def test_status_counts_masks_showing_a_class_tagged_absent(tmp_path, capsys):
    from segmenter.cli import main

    p, (a, b) = _horse_like_project(tmp_path, "ab")
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 1
    p.save_mask(a, mask, "predicted", source="model-x")
    p.save_mask(b, mask, "predicted", source="model-x")
    p.set_tag(a, 1, "absent")
    p.set_tag(b, 0, "present")
    assert main(["status", str(p.root)]) == 0
    assert ("masks showing a class tagged absent: 1 (a.png): an export re-segments those pixels without the class; "
            "predict again, or review them and accept again") in capsys.readouterr().out
    res = export_project(p, "folder", tmp_path / "out")
    got = imageio_read(tmp_path / "out" / "masks" / "a.png")
    assert not (got == 1).any()


# ----------------------------------------------------------------------------- EXIF orientation
#: The formats that write image files (masks and nifti write labels only).
IMAGE_FORMATS = [f for f in list_formats() if f not in ("masks", "nifti")]


def _exif_file(path: Path, arr: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"  # other EXIF data is kept
    Image.fromarray(arr).save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


def _exif_project(tmp_path):
    """rot.jpg: stored 40x30 with EXIF orientation 6 (shown 30 wide, 40 high); turn.png: stored
    24x16 with orientation 3 (shown turned by 180 degrees, same size); plain.jpg: no EXIF. Each
    has a final mask of its shown size."""
    p = Project.create(tmp_path / "proj", ["background", "obj"])
    yy, xx = np.mgrid[0:30, 0:40]
    smooth = np.dstack([xx * 6, yy * 8, (xx + 2 * yy) * 2]).astype(np.uint8)  # 30x40 ramps: JPEG-friendly
    files = tmp_path / "files"
    files.mkdir()
    infos = [p.add_image(_exif_file(files / "rot.jpg", smooth, 6)),
             p.add_image(_exif_file(files / "turn.png", smooth[:16, :24, ::-1].copy(), 3))]
    Image.fromarray(smooth).save(files / "plain.jpg", quality=90)
    infos.append(p.add_image(files / "plain.jpg"))
    for info in infos:
        m = np.zeros((info.height, info.width), np.uint8)
        m[: info.height // 3, : info.width // 2] = 1  # top-left as shown: not symmetric under any turn
        p.save_mask(info.id, m, "final", source="test")
    assert (infos[0].width, infos[0].height) == (30, 40)
    return p, infos


@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_export_writes_exif_rotated_images_upright(fmt, tmp_path):
    """An image whose EXIF orientation is not 1 is annotated as the tool shows it (upright), but
    every export copied its raw bytes: PIL / torchvision / COCO loaders ignore EXIF and read it
    40x30 beside a 30x40 mask. Now it is written upright (same format, tag removed, one note), the
    other images byte for byte, and importing the export back adds no image."""
    p, infos = _exif_project(tmp_path)
    res = export_project(p, fmt, tmp_path / "out")
    out = tmp_path / "out"
    files = {f.stem: f for f in out.rglob("*") if f.suffix in (".jpg", ".png") and f.parent.name in ("images",
                                                                                                       "JPEGImages")}
    assert sorted(files) == ["plain", "rot", "turn"], files
    for info in infos:
        f = files[info.stem]
        with Image.open(f) as im:  # as readers that ignore EXIF see it
            assert im.size == (info.width, info.height), (f, im.size)
            assert im.getexif().get(0x0112, 1) == 1
            assert im.format == ("JPEG" if fmt == "voc" else Image.open(p.root / info.file).format)
            pixels = np.asarray(im.convert("RGB")).astype(int)
        shown = p.load_image(info.id).astype(int)
        if info.stem == "turn" and fmt != "voc":
            np.testing.assert_array_equal(pixels, shown)  # PNG: lossless
        else:
            assert np.abs(pixels - shown).mean() < 4, info.stem
    if fmt != "voc":  # VOC re-encodes PNGs as JPEG anyway
        assert files["plain"].read_bytes() == (p.root / infos[2].file).read_bytes()
        with Image.open(files["rot"]) as im:
            assert im.getexif().get(0x010F) == "PhoneMaker"
    upright = [n for n in res.notes if "EXIF orientation" in n]
    assert upright == [f"note: {1 if fmt == 'voc' else 2} image(s) have an EXIF orientation (phone photos) and were "
                       "written upright, as the tool shows and annotates them (re-encoded: JPEG at quality 95, "
                       "PNG and TIFF losslessly; orientation tag removed): readers that ignore EXIF see them the size of their masks"], res.lines()
    masks = {f.stem: f for f in (out / ("SegmentationClass" if fmt == "voc" else "masks")).glob("*.png")}
    for info in infos:
        if info.stem in masks:
            with Image.open(masks[info.stem]) as m:
                assert m.size == (info.width, info.height)
    if fmt == "coco":
        sizes = {im["file_name"]: (im["width"], im["height"])
                 for im in json.loads((out / "annotations.json").read_text())["images"]}
        for info in infos:
            with Image.open(files[info.stem]) as im:
                assert sizes[files[info.stem].name] == im.size
    # Back into the same project: the upright copies are the project's images, nothing is added.
    summary = import_dataset(p, fmt, out)
    assert summary.added == [], [i.name for i in summary.added]
    assert sorted(i.name for i in p.images()) == ["plain.jpg", "rot.jpg", "turn.png"]
    assert not [n for n in summary.notes if "another picture" in n], summary.notes
    for info in infos:
        np.testing.assert_array_equal(p.mask(info.id, "final")[: info.height // 3, : info.width // 2], 1)


def test_upright_jpeg_copy_is_the_same_picture_by_its_comment_only(tmp_path):
    """same_picture knows a JPEG written upright by the export by the sha256 its comment records;
    the same pixels without that comment are another picture (as any re-encoded JPEG is)."""
    from annotations import imageio
    from annotations.formats._common import same_picture

    p, (rot, _, plain) = _exif_project(tmp_path)
    data = imageio.upright_image_bytes(p.root / rot.file, source_sha256=rot.sha256)
    (tmp_path / "up.jpg").write_bytes(data)
    assert imageio.upright_source(tmp_path / "up.jpg") == rot.sha256
    assert same_picture(p, rot, tmp_path / "up.jpg")
    assert not same_picture(p, plain, tmp_path / "up.jpg")
    with Image.open(tmp_path / "up.jpg") as im:
        im.info.pop("comment")
        im.save(tmp_path / "bare.jpg", quality=95)  # the same picture, without the comment
    assert imageio.upright_source(tmp_path / "bare.jpg") is None
    assert not same_picture(p, rot, tmp_path / "bare.jpg")
    assert imageio.upright_image_bytes(p.root / plain.file) is None  # nothing to turn


def test_mask_drawn_on_the_raw_orientation_names_the_exif_rotation(tmp_path):
    """A mask drawn on rot.jpg as stored (40x30, by a tool that ignores EXIF) was refused with
    "the mask is 40x30 but its image 'rot.png' is 30x40": the mask file's name for the image and
    no word of why. Now the project's image is named and the EXIF rotation explained; a swapped
    mask of an image without EXIF rotation gets a shorter hint."""
    p, (rot, _, plain) = _exif_project(tmp_path)
    d = tmp_path / "masks"
    d.mkdir()
    _save_png(d / "rot.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(SizeMismatchError) as e:
        import_dataset(p, "masks", d)
    assert str(e.value) == (
        "rot.png: the mask is 40x30 but its image 'rot.jpg' is 30x40; the image has an EXIF orientation and is "
        "used upright (30x40), as the tool shows it, so the mask must be drawn on the upright image (this one was "
        "drawn on the image as stored, before its EXIF rotation).")
    (d / "rot.png").unlink()
    _save_png(d / "plain.png", np.zeros((40, 30), np.uint8))
    with pytest.raises(SizeMismatchError, match=r"is 30x40 but its image 'plain.jpg' is 40x30 \(the mask's width and "
                                                r"height are swapped"):
        import_dataset(p, "masks", d)


def _paint_yolo_reference(label_path, ignore_path, size, offset, fill, n_classes, where):
    """paint_yolo as it was: one full-size pycocotools mask per polygon (the pixel rule to keep)."""
    from annotations.formats._functional import polygons_to_mask
    from annotations.formats.yolo import _parse_lines

    h, w = size
    out = np.full((h, w), fill, np.uint8)
    scale = np.array([w, h], np.float64)
    rows = [(n, c, v) for n, c, v in _parse_lines(label_path, where, True)]
    if ignore_path is not None:
        rows += [(n, None, v) for n, _, v in _parse_lines(ignore_path, f"ignore/{ignore_path.name}", False)]
    for n, cls, vals in rows:
        assert 0 <= (cls or 0) < n_classes - offset
        poly = (np.asarray(vals).reshape(-1, 2) * scale).ravel().tolist()
        out[polygons_to_mask([poly], h, w)] = 255 if cls is None else cls + offset
    return out


def _random_yolo_lines(rng, n: int, with_class: bool) -> str:
    lines = []
    for _ in range(n):
        kind = rng.integers(0, 10)
        if kind < 2:  # with a class a detection box (cx cy w h), else two points (paint nothing)
            vals = [*rng.uniform(0.25, 0.75, 2), *rng.uniform(0, 0.5, 2)]
        else:
            k = int(rng.integers(3, 12))
            c, r = rng.uniform(-0.05, 1.05, 2), rng.uniform(0.0, 0.7) ** 2
            xy = np.clip(c + r * rng.uniform(-1, 1, (k, 2)), -0.01, 1.01)
            if kind == 2:  # on a coarse grid: vertices at pixel corners, as this tool's export writes them
                xy = np.round(xy * 10) / 10
            vals = xy.ravel()
        text = " ".join(f"{v:.6f}" for v in vals)
        lines.append(f"{rng.integers(0, 3)} {text}" if with_class else text)
    return "\n".join(lines) + "\n"


def test_paint_yolo_paints_the_same_pixels_as_one_mask_per_polygon(tmp_path):
    """paint_yolo built a full-size mask per polygon (~40 s for three 12-MP images with ~550
    polygons); it now paints each polygon's RLE over the span it covers. The masks must be the
    same pixel for pixel: random polygons, boxes, 2-point lines, overlaps in file order, ignore
    polygons painted last, coordinates a little outside 0..1, odd image sizes."""
    from annotations.formats.yolo import paint_yolo

    rng = np.random.default_rng(11)
    for trial in range(60):
        h, w = int(rng.integers(1, 70)), int(rng.integers(1, 70))
        lab, ign = tmp_path / f"l{trial}.txt", tmp_path / f"i{trial}.txt"
        lab.write_text(_random_yolo_lines(rng, int(rng.integers(0, 15)), True))
        ign.write_text(_random_yolo_lines(rng, int(rng.integers(1, 4)), False))
        for ignore in (None, ign):
            for offset, fill in ((1, 0), (0, 255)):
                args = (lab, ignore, (h, w), offset, fill, 4, lab.name)
                got = paint_yolo(*args)
                assert got.flags.c_contiguous and got.dtype == np.uint8
                np.testing.assert_array_equal(got, _paint_yolo_reference(*args), err_msg=f"trial {trial}")


def test_paint_yolo_many_polygons_on_a_large_image(tmp_path, monkeypatch):
    """Hundreds of small islands and a few large polygons on one image (the slow import's shape):
    the same mask as one full-size mask per polygon, made without decoding any polygon to a
    full-size mask (what made it slow; no timing here)."""
    from pycocotools import mask as mask_utils

    from annotations.formats.yolo import paint_yolo

    rng = np.random.default_rng(3)
    h, w = 300, 400
    lines = []
    for _ in range(400):  # 1-3 px islands with vertices at pixel corners, as the export writes them
        x, y = int(rng.integers(0, w - 3)), int(rng.integers(0, h - 3))
        dx, dy = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pts = [(x, y), (x + dx, y), (x + dx, y + dy), (x, y + dy)]
        lines.append(f"{rng.integers(0, 2)} " + " ".join(f"{px / w:.6f} {py / h:.6f}" for px, py in pts))
    lines.append("0 0.1 0.1 0.9 0.15 0.8 0.9 0.05 0.7")
    lines.append("1 0.0 0.0 1.0 0.0 1.0 1.0 0.0 1.0")  # the whole image, then islands on top
    lines += lines[:50]
    lab = tmp_path / "many.txt"
    lab.write_text("\n".join(lines) + "\n")
    args = (lab, None, (h, w), 1, 0, 3, lab.name)
    with monkeypatch.context() as m:
        m.setattr(mask_utils, "decode", lambda *a: pytest.fail("a polygon was decoded to a full-size mask"))
        got = paint_yolo(*args)
    np.testing.assert_array_equal(got, _paint_yolo_reference(*args))
    assert set(np.unique(got).tolist()) == {1, 2}


def test_an_export_of_final_masks_when_there_is_none_says_so(tmp_path):
    """"Final masks only" with no final mask wrote a zip of images and no word (bug hunt 45)."""
    from annotations.imageio import encode_image_png

    p = Project.create(tmp_path / "p")
    info = p.add_image(encode_image_png(np.zeros((8, 8, 3), np.uint8)), name="a.png")
    p.save_mask(info.id, np.ones((8, 8), np.uint8), "predicted", source="m")
    res = export_project(p, "png", tmp_path / "out.zip", masks="final")
    assert res.masks == 0 and any("no image has a final mask" in n for n in res.notes), res.lines()
    res = export_project(p, "png", tmp_path / "best.zip", masks="best")
    assert res.masks == 1 and not any("no image has a final mask" in n for n in res.notes)
