"""Import: image folders, bad files, folder datasets (every one in ../shared/datasets), round trips."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotations import imageio
from annotations.errors import AnnotationError, ImageError
from annotations.folder import FolderDataset
from annotations.formats import export_project
from annotations.importer import import_path
from annotations.store import Project
from conftest import DATASETS, REPO, dataset_path


def _snapshot(p: Project):
    files = sorted(str(f.relative_to(p.root)) for f in p.root.rglob("*") if f.is_file() and "project.db" not in f.name)
    return p.counts(), files


@pytest.fixture
def bad_files(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n")
    Image.new("1", (8200, 8200)).save(d / "huge.png")
    return d


def test_bad_files_are_skipped_with_reasons_and_change_nothing(tmp_path, bad_files):
    p = Project.create(tmp_path / "p")
    good = tmp_path / "good.png"
    good.write_bytes(imageio.encode_image_png(np.zeros((8, 8, 3), np.uint8)))
    p.add_image(good)
    before = _snapshot(p)
    s = import_path(p, bad_files)
    reasons = dict(s.skipped)
    assert not s.added and len(reasons) == 4
    assert "truncated" in reasons["truncated.jpg"] or "damaged" in reasons["truncated.jpg"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["notes.png"]
    assert "over the limit" in reasons["huge.png"]
    assert _snapshot(p) == before


@pytest.mark.parametrize("name, match", [("truncated.jpg", "damaged or truncated"), ("empty.png", "empty"),
                                         ("notes.png", "not an image"), ("huge.png", "over the limit")])
def test_each_bad_file_has_its_clear_error(bad_files, name, match):
    with pytest.raises(ImageError, match=match):
        imageio.read_image(bad_files / name)


def test_cli_bad_input_exit_2_one_line(tmp_path, bad_files):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = lambda *a: subprocess.run([sys.executable, "-m", "segmenter", *a], capture_output=True, text=True, env=env)
    r = run("init", str(tmp_path / "p"))
    assert r.returncode == 0
    r = run("import", str(tmp_path / "p"), str(bad_files / "notes.png"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing was imported" in r.stderr
    assert "skipped: notes.png: not an image" in r.stdout
    r = run("status", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a project" in r.stderr and "Traceback" not in r.stderr
    r = run("classes", str(tmp_path / "p"), "rename", "zebra", "x")
    assert r.returncode == 2 and "no class 'zebra'" in r.stderr
    r = run("export", str(tmp_path / "p"), "--format", "nope")
    assert r.returncode == 2 and "unknown format 'nope' (known:" in r.stderr


def test_cli_status_says_what_each_count_means(tmp_path, capsys):
    """'scribbled: 2' beside 'status: ... scribbled 0' read as a contradiction: one counts images
    with strokes, the other each image once at its furthest status. The output says which is which."""
    from segmenter.cli import main

    p = Project.create(tmp_path / "p", ["background", "cell"])
    ids = [p.add_image(imageio.encode_image_png(np.full((8, 8), k, np.uint8)), name=f"{k}.png").id for k in range(3)]
    scr = np.full((8, 8), 255, np.uint8)
    scr[0, 0] = 1
    for i in ids[:2]:
        p.save_scribbles(i, scr)
        p.save_mask(i, np.zeros((8, 8), np.uint8), "final", source="test")
    p.set_tag(ids[2], 1, "present")
    p.close()
    assert main(["status", str(tmp_path / "p")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "images: 3  with strokes: 2  with tags: 1"
    assert lines[2] == ("by furthest status (each image once): final 2, imported 0, predicted 0, pseudo 0, "
                        "scribbled 0, tagged 1, untouched 0")
    assert lines[3].startswith("current masks: ") and "final 2" in lines[3]
    assert not any(line.startswith(("scribbled:", "status:")) or " scribbled: " in line for line in lines)


def test_webp_files_in_a_folder_are_imported_as_one_alone_is(tmp_path):
    """A .webp given alone was imported, but skipped without a word inside a folder (bug hunt 44)."""
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "imgs" / "a.webp", lossless=True)
    Image.fromarray(np.full((20, 30, 3), 10, np.uint8)).save(tmp_path / "imgs" / "b.png")
    p = Project.create(tmp_path / "p")
    s = import_path(p, tmp_path / "imgs")
    assert len(s.added) == 2 and not s.skipped
    info = p.image_by_name("a.webp")
    assert info.file.endswith("_a.webp") and (p.load_image(info.id) == 90).all()


def test_image_kinds_16bit_grayscale_exif_alpha(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    a16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    Image.fromarray(a16).save(d / "depth.tif")
    Image.fromarray(np.full((10, 12), 7, np.uint8)).save(d / "gray.bmp")
    Image.fromarray(np.zeros((10, 12, 4), np.uint8)).save(d / "rgba.png")
    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: width and height swap
    im.save(d / "rot.jpg", exif=exif)
    p = Project.create(tmp_path / "p")
    s = import_path(p, d)
    assert not s.skipped, s.skipped
    by = {i.name: i for i in p.images()}
    depth = p.load_image(by["depth.tif"].id)
    assert depth.dtype == np.uint8 and depth.min() == 0 and depth.max() == 255
    assert (p.root / by["depth.tif"].file).read_bytes() == (d / "depth.tif").read_bytes()  # original kept
    assert p.load_image(by["gray.bmp"].id).shape == (10, 12)
    assert p.load_image(by["rgba.png"].id).shape == (10, 12, 3)
    assert (by["rot.jpg"].width, by["rot.jpg"].height) == (10, 20)
    assert p.load_image(by["rot.jpg"].id).shape == (20, 10, 3)


EXPECTED = {  # name: (images, classes, scribble sets, splits)
    "grabcut": (50, 2, ["set1", "set2"], []),
    "weizmann_horse": (327, 2, [], ["test", "train"]),
    "acdc": (1512, 4, ["real"], ["fold2", "fold3", "fold4", "fold5"]),
    "camvid": (468, 11, [], ["train", "val"]),
    "camvid_tiles": (4212, 11, [], ["train", "val"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_dataset_imports_with_right_counts_and_round_trips(tmp_path, name):
    src = dataset_path(name)
    n_images, n_classes, sets, splits = EXPECTED[name]
    ds = FolderDataset.open(src)
    p = Project.create(tmp_path / "p")
    s = import_path(p, src)
    assert not s.skipped, s.skipped[:3]
    assert len(p.images()) == n_images == len(ds.ids)
    assert p.class_names == json.loads((src / "meta.json").read_text())["classes"] and p.num_classes == n_classes
    assert p.counts()["masks"]["imported"] == n_images
    assert p.scribble_layers() == sets
    assert p.image_sets() == splits
    for sp in splits:
        assert len(p.image_set(sp)) == len(ds.split(sp))
    # Export in the folder layout, import into a fresh project: masks and scribbles bit for bit.
    export_project(p, "folder", tmp_path / "out")
    q = Project.create(tmp_path / "q")
    s2 = import_path(q, tmp_path / "out")
    assert not s2.skipped and len(q.images()) == n_images
    qa = {i.stem: i.id for i in q.images()}
    for info in p.images():
        j = qa[info.stem]
        assert np.array_equal(p.mask(info.id, "imported"), q.mask(j, "imported"))
        assert np.array_equal(ds.mask(info.stem), q.mask(j, "imported"))
        for layer in sets:
            a, b = p.scribbles(info.id, layer), q.scribbles(j, layer)
            assert (a is None and b is None) or np.array_equal(a, b)
            orig = ds.scribbles(layer, info.stem)
            assert (orig is None and b is None) or np.array_equal(orig, b)
    assert q.image_sets() == splits
    assert {sp: len(q.image_set(sp)) for sp in splits} == {sp: len(p.image_set(sp)) for sp in splits}


# ----------------------------------------------------------------------------- small folder datasets
def _folder_dataset(root: Path, meta, images=("a.png",)) -> Path:
    (root / "images").mkdir(parents=True)
    for k, name in enumerate(images):
        Image.fromarray(np.full((8, 12, 3), 10 * k, np.uint8)).save(root / "images" / name)
    (root / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return root


def test_a_zipped_folder_export_imports_back_without_a_format(tmp_path):
    p = Project.create(tmp_path / "p", ["bg", "fg"])
    info = p.add_image(_folder_dataset(tmp_path / "d", {"classes": ["bg", "fg"]}) / "images" / "a.png")
    m = np.zeros((8, 12), np.uint8)
    m[2:5, 3:9] = 1
    p.save_mask(info.id, m, "final", source="test")
    export_project(p, "folder", tmp_path / "out.zip")
    q = Project.create(tmp_path / "q")
    s = import_path(q, tmp_path / "out.zip")
    assert not s.skipped and s.masks == 1
    np.testing.assert_array_equal(q.mask(q.images()[0].id, "imported"), m)
    # An error inside the zip names the zip, not the temporary folder it was extracted to.
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("meta.json", "[]")
    with pytest.raises(AnnotationError, match=f"^{tmp_path / 'bad.zip'}/meta.json: "):
        import_path(Project.create(tmp_path / "r"), tmp_path / "bad.zip")


def test_a_dataset_that_replaces_the_classes_of_a_project_without_annotations_says_so(tmp_path):
    """Importing a dataset into a project with images but no annotations replaced its classes (and
    colours) silently (bug hunt 44): it still does (nothing is lost), and the summary says so."""
    d = _folder_dataset(tmp_path / "d", {"classes": ["background", "RV", "LV"]})
    p = Project.create(tmp_path / "p", ["background", "horse", "rider"])
    s = import_path(p, d)
    assert p.class_names == ["background", "RV", "LV"]
    assert any("the project's classes (background, horse, rider) were replaced by the dataset's "
               "(background, RV, LV)" in n for n in s.notes), s.notes
    q = Project.create(tmp_path / "q")  # the placeholder classes of a new project: nothing to say
    assert not any("were replaced" in n for n in import_path(q, d).notes)


@pytest.mark.parametrize("meta, match", [
    ('{"classes": ["bg", "fg"], "ignore_index": "x"}', r"meta.json: 'ignore_index' must be a whole number .*\"x\""),
    ('{"classes": ["bg", "fg"], "ignore_index": null}', r"meta.json: 'ignore_index' must be a whole number .*null"),
    ('{"classes": ["bg", "fg"], "ignore_index": 2.5}', r"meta.json: 'ignore_index' must be a whole number .*2.5"),
    ('{"classes": ["bg", "fg"], "ignore_index": 300}', r"meta.json: 'ignore_index' must be a whole number 0..255"),
    ("[]", r"meta.json: meta.json must be a JSON object .*not a list"),
    ('"just a string"', r"meta.json: meta.json must be a JSON object .*not a str"),
])
def test_malformed_meta_json_is_one_clear_error(tmp_path, meta, match):
    d = _folder_dataset(tmp_path / "d", meta)
    p = Project.create(tmp_path / "p")
    with pytest.raises(AnnotationError, match=match):
        import_path(p, d)
    assert p.images() == []


def test_meta_json_colours_are_kept_and_bad_ones_noted(tmp_path):
    d = _folder_dataset(tmp_path / "d", {"classes": ["bg", "cat", "dog"], "colors": ["#000001", "#123456", "nope"]})
    p = Project.create(tmp_path / "p")
    s = import_path(p, d)
    assert [c.hex for c in p.classes()][:2] == ["#000001", "#123456"]
    assert p.classes()[2].hex == Project.create(tmp_path / "fresh", ["a", "b", "c"]).classes()[2].hex  # default
    assert any("class 'dog' the colour \"nope\", not #rrggbb" in n for n in s.notes), s.notes
    # Colours the wrong length: all default, said so, no crash.
    (d / "meta.json").write_text(json.dumps({"classes": ["bg", "cat", "dog"], "colors": "#123456"}))
    q = Project.create(tmp_path / "q")
    s = import_path(q, d)
    assert len(s.added) == 1 and any("'colors' is not a list of 3 colours" in n for n in s.notes), s.notes


def test_two_images_of_one_stem_are_reported_not_dropped_silently(tmp_path):
    d = _folder_dataset(tmp_path / "d", {"classes": ["bg", "fg"]}, images=("x.png", "x.jpg", "y.png"))
    p = Project.create(tmp_path / "p")
    s = import_path(p, d)
    assert sorted(i.name for i in p.images()) == ["x.jpg", "y.png"]
    reasons = dict(s.skipped)
    assert list(reasons) == ["images/x.png"]
    assert "same name stem 'x' as images/x.jpg" in reasons["images/x.png"]


# ----------------------------------------------------------------------------- bug-hunt regressions
def _labelled_dataset(root: Path) -> Path:
    """A folder dataset of two images, each with a mask and a scribble map, and a split."""
    d = _folder_dataset(root, {"classes": ["bg", "fg"]}, images=("a.png", "b.png"))
    for sub in ("masks", "scribbles/s1", "splits"):
        (d / sub).mkdir(parents=True)
    for k, name in enumerate(("a", "b")):
        m = np.zeros((8, 12), np.uint8)
        m[k : k + 3] = 1
        Image.fromarray(m).save(d / "masks" / f"{name}.png")
        Image.fromarray(np.where(m == 1, 1, 255).astype(np.uint8)).save(d / "scribbles" / "s1" / f"{name}.png")
    (d / "splits" / "train.txt").write_text("a\nb\n")
    return d


def test_folder_dataset_imported_into_a_project_holding_its_images_stores_the_labels(tmp_path):
    d = _labelled_dataset(tmp_path / "d")
    p = Project.create(tmp_path / "p")
    import_path(p, d / "images")  # the images first, then the dataset
    s = import_path(p, d)
    assert not s.added and s.masks == 2 and s.scribbles == 2, s.lines()
    assert [i.name for i in p.images()] == ["a.png", "b.png"]
    for info in p.images():
        np.testing.assert_array_equal(p.mask(info.id, "imported"), imageio.read_label_map(d / "masks" / info.name))
        assert p.scribbles(info.id, "s1") is not None
    assert len(p.image_set("train")) == 2
    # Export, edit a mask elsewhere, import back: the edit lands on the same image.
    export_project(p, "folder", tmp_path / "out")
    Image.fromarray(np.ones((8, 12), np.uint8)).save(tmp_path / "out" / "masks" / "b.png")
    s = import_path(p, tmp_path / "out")
    # Only the edited mask is stored (as the image's final mask: a person's edit); a's equals the
    # stored one (skipped, no new version).
    assert not s.added and s.masks == 1 and s.scribbles == 0, s.lines()
    assert (p.mask(p.image_by_name("b.png").id, "final") == 1).all()
    assert len(p.mask_history(p.image_by_name("b.png").id, "imported")) == 1
    assert len(p.mask_history(p.image_by_name("a.png").id)) == 1


def test_options_are_passed_and_checked_without_a_format(tmp_path, capsys):
    from segmenter.cli import main

    p = Project.create(tmp_path / "p", ["bg", "fg"])
    d = _labelled_dataset(tmp_path / "d")
    import_path(p, d)
    a = p.images()[0]
    p.save_mask(a.id, p.mask(a.id, "imported"), "final", source="review")
    export_project(p, "folder", tmp_path / "out.zip")
    q = Project.create(tmp_path / "q")
    import_path(q, tmp_path / "out.zip", {"kind": "manifest"})
    assert q.counts()["masks"]["final"] == 1 and q.counts()["masks"]["imported"] == 1
    for extra in ([], ["--format", "folder"]):
        assert main(["import", str(tmp_path / f"r{len(extra)}"), str(tmp_path / "out.zip"), "--create", *extra,
                     "--option", "kidn=final"]) == 2
        err = capsys.readouterr().err
        assert "format 'folder' has no option 'kidn' (options: kind:" in err and "Traceback" not in err
        assert not (tmp_path / f"r{len(extra)}").exists()
    with pytest.raises(AnnotationError, match="--option kind does not apply: this is a folder of images"):
        import_path(Project.create(tmp_path / "s"), d / "images", {"kind": "final"})


def test_a_zip_made_by_macos_finder_is_read_as_the_dataset_it_holds(tmp_path):
    d = _labelled_dataset(tmp_path / "grabcut")
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as zf:
        for f in sorted(d.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path).as_posix())
        zf.writestr("__MACOSX/grabcut/._meta.json", b"\x00\x05\x16\x07")  # AppleDouble resource fork
        zf.writestr("__MACOSX/grabcut/images/._a.png", b"\x00\x05\x16\x07")
    p = Project.create(tmp_path / "p")
    s = import_path(p, tmp_path / "ds.zip")
    assert len(s.added) == 2 and s.masks == 2 and s.scribbles == 2, s.lines()
    # A zipped folder of plain images made on a Mac: the __MACOSX copies are no images.
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        zf.write(d / "images" / "a.png", "imgs/a.png")
        zf.writestr("__MACOSX/imgs/x.png", (d / "images" / "b.png").read_bytes())
    q = Project.create(tmp_path / "q")
    assert [i.name for i in import_path(q, tmp_path / "imgs.zip").added] == ["a.png"]


def test_a_tag_cleared_after_an_export_stays_cleared_when_the_export_is_imported_back(tmp_path):
    """tag --present, export, tag --unknown, import the export: the tag came back with the default
    tags=keep (bug hunt 44, #6). The store now keeps when a tag was cleared, the manifest when the
    export was written; tags=replace still takes the export's."""
    p, ids = _kinds_project(tmp_path)
    a, b = ids["a"], ids["b"]
    p.set_tag(a, 1, "present")
    p.set_tag(b, 1, "present")
    export_project(p, "folder", tmp_path / "out")
    time.sleep(0.01)
    p.set_tag(a, 1, "unknown")  # the person takes the tag back after the export
    assert p.tag_cleared(a, 1) is not None and p.tag_cleared(b, 1) is None
    s = import_path(p, tmp_path / "out")
    assert p.tags(a) == {} and p.tags(b) == {1: "present"}
    assert any("kept" in n and "tag" in n for n in s.notes), s.notes
    import_path(p, tmp_path / "out", {"tags": "replace"})
    assert p.tags(a) == {1: "present"} and p.tag_cleared(a, 1) is None  # set again: no longer cleared
    q = Project.create(tmp_path / "q", ["bg", "fg"])  # a project that never had the tag takes it
    for n in "abcde":
        q.add_image(tmp_path / "src" / f"{n}.png")
    import_path(q, tmp_path / "out")
    assert q.tags(q.image_by_name("a.png").id) == {1: "present"}


@pytest.mark.parametrize("fmt", ["folder", "weak"])
def test_strokes_undone_after_an_export_stay_undone_when_the_export_is_imported_back(tmp_path, fmt):
    """Strokes exported, then undone back to no strokes, came back on re-importing the export (the
    layer was empty, so it took the export's); a weak export also brought back a tag cleared since.
    Undone since the export now stays undone (one note);
    scribbles=replace still takes them, and a project that never had them takes them."""
    p, ids = _kinds_project(tmp_path)
    a, b = ids["a"], ids["b"]
    s = np.full((20, 30), 255, np.uint8)
    s[1:3, 1:6] = 1
    p.save_scribbles(a, s, layer="real")
    p.save_scribbles(b, s, layer="real")
    d = ids["d"]  # no mask: the export makes its pseudo-mask from the strokes
    p.save_scribbles(d, s, layer="real")
    p.set_tag(b, 1, "present")
    export_project(p, fmt, tmp_path / "out")
    time.sleep(0.01)
    assert p.undo_scribbles(a, "real") == 0  # the person takes the strokes back after the export
    assert p.undo_scribbles(d, "real") == 0
    p.set_tag(b, 1, "unknown")  # ... and a tag (weak imports did not look at the export's time)
    got = import_path(p, tmp_path / "out")  # read as the format its manifest names
    assert p.scribbles(a, "real") is None and p.scribble_version(a, "real") == 0, got.lines()
    np.testing.assert_array_equal(p.scribbles(b, "real"), s)
    assert p.tags(b) == {}
    # the pseudo-mask the export made from d's strokes, undone since, is no edit made elsewhere
    assert p.mask_info(d, "final") is None and p.scribble_version(d, "real") == 0, got.lines()
    assert any(n.startswith("note: 2 image(s) had the strokes this export holds undone") for n in got.notes), got.notes
    assert any("1 image(s)" in n and "tags (" not in n and "tags" in n and "kept" in n for n in got.notes), got.notes
    import_path(p, tmp_path / "out", {"scribbles": "replace"})
    np.testing.assert_array_equal(p.scribbles(a, "real"), s)
    q = Project.create(tmp_path / "q", ["bg", "fg"])  # a project that never had the strokes takes them
    for n in "abcde":
        q.add_image(tmp_path / "src" / f"{n}.png")
    import_path(q, tmp_path / "out")
    np.testing.assert_array_equal(q.scribbles(q.image_by_name("a.png").id, "real"), s)


def test_reimporting_a_folder_dataset_keeps_strokes_and_tags_made_in_the_project_since(tmp_path):
    """Re-importing a dataset folder (to add new images) replaced the strokes drawn in the app
    since the first import with the dataset's older ones; and re-set tags changed since."""
    from segmenter.cli import main

    d = _labelled_dataset(tmp_path / "d")
    (d / "tags.json").write_text(json.dumps({"classes": ["bg", "fg"], "tags": {"a": {"fg": "present"},
                                                                              "b": {"fg": "present"}}}))
    p = Project.create(tmp_path / "p")
    import_path(p, d)
    a, b = p.image_by_name("a.png"), p.image_by_name("b.png")
    drawn = p.scribbles(a.id, "s1").copy()
    drawn[5:7, 5:10] = 0  # the annotator's strokes in the app
    p.save_scribbles(a.id, drawn, layer="s1", author="app")
    p.set_tag(a.id, 1, "absent")  # ... and a corrected tag
    p.set_tag(b.id, 0, "present")  # ... and a new one (the dataset has no tag of bg for b)
    p.undo_scribbles(b.id, "s1")  # b's layer has no strokes now
    # One more image arrives in the folder; it is imported again.
    Image.fromarray(np.full((8, 12, 3), 90, np.uint8)).save(d / "images" / "c.png")
    s = import_path(p, d)
    assert [i.name for i in s.added] == ["c.png"], s.lines()
    np.testing.assert_array_equal(p.scribbles(a.id, "s1"), drawn)  # kept, no new version
    assert p.scribble_version(a.id, "s1") == 2
    np.testing.assert_array_equal(p.scribbles(b.id, "s1"), imageio.read_label_map(d / "scribbles/s1/b.png"))
    assert p.tags(a.id) == {1: "absent"} and p.tags(b.id) == {0: "present", 1: "present"}
    assert s.masks == 0 and s.scribbles == 1, s.lines()  # equal masks: no new version
    assert all(len(p.mask_history(i.id, "imported")) == 1 for i in (a, b))
    notes = [n for n in s.notes if "differ from the dataset's" in n]
    assert notes == ["note: 1 image(s) already in the project have strokes (1) or tags (1) that differ from the "
                     "dataset's; the project's were kept (to take the dataset's instead, import again with "
                     "--option scribbles=replace --option tags=replace)"], s.lines()
    # Again: nothing is stored (b's strokes are the dataset's now), the same note.
    s2 = import_path(p, d)
    assert s2.scribbles == 0 and s2.masks == 0 and p.scribble_version(b.id, "s1") == 2, s2.lines()
    assert [n for n in s2.notes if "differ from the dataset's" in n] == notes
    # Taking the dataset's, through the CLI; the drawn strokes stay in the history.
    assert main(["import", str(p.root), str(d), "--option", "scribbles=replace", "--option", "tags=replace"]) == 0
    np.testing.assert_array_equal(p.scribbles(a.id, "s1"), imageio.read_label_map(d / "scribbles/s1/a.png"))
    np.testing.assert_array_equal(p.scribbles(a.id, "s1", version=2), drawn)
    assert p.tags(a.id) == {1: "present"}
    with pytest.raises(AnnotationError, match="option scribbles=merge: must be one of keep, replace"):
        import_path(p, d, {"scribbles": "merge"})


# ----------------------------------------------------------------------------- re-import of an edited export
def _kinds_project(root: Path) -> tuple[Project, dict]:
    """Images a..e (20x30, noise) with a final (a), predicted (b, c) and imported (e) mask; d has none."""
    p = Project.create(root / "p", ["bg", "fg"])
    rng = np.random.default_rng(5)
    (root / "src").mkdir()
    ids = {}
    for n in "abcde":
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / "src" / f"{n}.png")
        ids[n] = p.add_image(root / "src" / f"{n}.png").id
    m = np.zeros((20, 30), np.uint8)
    m[:8] = 1
    p.save_mask(ids["a"], m, "final", source="app:accept")
    for n in "bc":
        p.save_mask(ids[n], m, "predicted", source="model:unet/resnet18", model_version="v1",
                    confidence=np.full((20, 30), 0.6, np.float32))
    p.save_mask(ids["e"], m, "imported", source="import:earlier")
    return p, ids


def test_a_project_folder_is_refused_as_a_folder_of_images(tmp_path):
    """"Add images from folder" with a project's folder (its own or another's) added every mask,
    confidence and stroke PNG as an image (bug hunt 45)."""
    p, ids = _kinds_project(tmp_path)
    q = Project.create(tmp_path / "q", ["bg", "fg"])
    with pytest.raises(AnnotationError, match="is this project's folder, not a folder of images"):
        import_path(p, p.root)
    with pytest.raises(AnnotationError, match="is a project's folder, not a folder of images.*Export that project"):
        import_path(q, p.root)
    assert len(p.images()) == 5 and q.images() == []


def test_another_projects_export_keeps_its_kinds_and_no_mask_is_called_edited(tmp_path):
    """A project holding the same images imports another project's export, nobody having edited it:
    its final mask was reported "differs from what was exported (edited elsewhere)" (bug hunt 44,
    #10); it keeps its kind, and the note counts it with the others of the kinds recorded."""
    p, ids = _kinds_project(tmp_path)
    export_project(p, "folder", tmp_path / "out")
    q = Project.create(tmp_path / "q", ["bg", "fg"])
    for n in "abcde":
        q.add_image(tmp_path / "src" / f"{n}.png")
    s = import_path(q, tmp_path / "out")
    notes = " ".join(s.notes)
    assert "edited elsewhere" not in notes, s.notes
    assert "1 final, 1 imported, 2 predicted mask(s) this project never held" in notes, s.notes
    assert q.mask_info(q.image_by_name("a.png").id, "final").source.endswith("(final of another project)")


def _edit(out: Path, stem: str, rows: slice) -> np.ndarray:
    """Write masks/<stem>.png as another tool would after a person's edit."""
    m = np.zeros((20, 30), np.uint8)
    m[rows] = 1
    Image.fromarray(m).save(out / "masks" / f"{stem}.png")
    return m


def test_reimporting_an_edited_folder_export_makes_the_edits_final_and_skips_the_rest(tmp_path, capsys):
    """Bug hunt 22 (finding 3): export, edit some masks in another tool, import back (the README's
    round trip). Every mask came back as 'imported' (predictions became full training labels), the
    edit of a finished image was hidden behind its old final mask without a word, unchanged masks
    were stored again, and each image printed a 'duplicate:' line. Now (manifest.json present) an
    edited mask becomes its image's final mask, an unchanged one is skipped, kinds stay."""
    from segmenter.cli import main

    p, ids = _kinds_project(tmp_path)
    export_project(p, "folder", tmp_path / "out")
    out = tmp_path / "out"
    fixed_a = _edit(out, "a", slice(0, 12))  # a finished image fixed again elsewhere
    fixed_b = _edit(out, "b", slice(3, 9))   # a prediction corrected by hand elsewhere
    new_d = _edit(out, "d", slice(10, 20))   # drawn elsewhere (the export had no mask for d)
    before = {n: len(p.mask_history(i)) for n, i in ids.items()}
    assert main(["import", str(p.root), str(out)]) == 0
    text = capsys.readouterr().out
    assert "duplicate" not in text and "5 images already in the project: their labels were merged" in text, text
    assert "note: masks compared with the export's (manifest.json): 3 masks differ from what was exported (edited " \
           "elsewhere) and became their image's final mask (a.png, b.png, d.png); 2 unchanged masks skipped" in text
    assert "added 0 image(s), 3 mask(s)" in text
    np.testing.assert_array_equal(p.best_mask(ids["a"])[0], fixed_a)
    assert p.status(ids["a"]) == "final" and len(p.mask_history(ids["a"], "final")) == 2
    np.testing.assert_array_equal(p.mask(ids["b"], "final"), fixed_b)
    assert p.mask_info(ids["b"], "final").source == "import:p(edited predicted)"  # the dataset name meta.json gives
    assert p.mask_info(ids["b"], "predicted").model_version == "v1"  # the prediction itself stays
    np.testing.assert_array_equal(p.mask(ids["d"], "final"), new_d)
    # Unchanged: no new version, no kind turned into 'imported'.
    assert len(p.mask_history(ids["c"])) == before["c"] and p.status(ids["c"]) == "predicted"
    assert len(p.mask_history(ids["e"])) == before["e"]
    assert p.counts()["masks"] == {"pseudo": 0, "predicted": 2, "final": 3, "imported": 1}

    # Imported again as it is: nothing changes.
    s = import_path(p, out)
    assert s.masks == 0 and len(s.merged) == 5, s.lines()

    # Another edit of a, but a's final mask in the project is newer than the export: it stays, the
    # edit is kept behind it (as imported) and a note says how to use it.
    again = _edit(out, "a", slice(0, 2))
    s = import_path(p, out)
    assert s.masks == 1, s.lines()
    np.testing.assert_array_equal(p.mask(ids["a"], "final"), fixed_a)
    np.testing.assert_array_equal(p.mask(ids["a"], "imported"), again)
    assert [n for n in s.notes if "newer than the export" in n] == [
        "note: 1 edited mask(s) were not made final: the project's final mask of a.png is newer than the export and "
        "stays; the edits are stored as imported masks behind it (to make them final: python -m segmenter accept "
        "PROJECT --kind imported --replace-final --images a.png)"], s.lines()

    # --option kind=... still decides for every mask (each one unlike the current mask of that kind).
    _edit(out, "c", slice(0, 5))
    s = import_path(p, out, {"kind": "pseudo"})
    assert s.masks == 5 and p.counts()["masks"]["pseudo"] == 5, s.lines()
    assert (p.mask(ids["c"], "pseudo")[:5] == 1).all() and p.mask_info(ids["c"], "final") is None


def test_reimport_without_a_manifest_stores_imported_masks_and_says_when_a_final_hides_them(tmp_path):
    p, ids = _kinds_project(tmp_path)
    export_project(p, "folder", tmp_path / "out")
    out = tmp_path / "out"
    (out / "manifest.json").unlink()  # e.g. written by another tool in our layout
    edited = _edit(out, "a", slice(0, 12))
    s = import_path(p, out)
    # Today's rule: every mask that differs from the current imported one is stored as imported ...
    assert s.masks == 3 and p.counts()["masks"]["imported"] == 4, s.lines()  # a, b, c (e: equal)
    np.testing.assert_array_equal(p.mask(ids["a"], "imported"), edited)
    # ... but a's is hidden behind its final mask: a note says so, and how to use it.
    assert [n for n in s.notes if "hidden behind" in n] == [
        "note: 1 imported mask(s) are hidden behind the final mask their image already has (a.png): status, training "
        "and export keep the final mask (to make them final: python -m segmenter accept PROJECT --kind imported "
        "--replace-final --images a.png)"], s.lines()
    assert "5 images already in the project: their labels were merged" in s.lines() and \
        not [line for line in s.lines() if line.startswith("duplicate")]


def test_reimport_skips_a_stale_prediction_exported_corrected_by_strokes(tmp_path):
    """An export corrects a prediction older than strokes drawn since; that corrected mask coming
    back unchanged is no edit (not stored, not made final)."""
    p, ids = _kinds_project(tmp_path)
    scr = np.full((20, 30), 255, np.uint8)
    scr[14:17, 5:25] = 1  # drawn after the prediction, contradicting it
    p.save_scribbles(ids["c"], scr)
    export_project(p, "folder", tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["masks"]["c"]["source"].endswith("at export)")  # the export corrected it
    exported = imageio.read_label_map(tmp_path / "out" / "masks" / "c.png")
    assert not np.array_equal(exported, p.mask(ids["c"], "predicted"))
    s = import_path(p, tmp_path / "out")
    assert s.masks == 0 and p.mask_info(ids["c"], "final") is None, s.lines()


def test_a_project_whose_background_is_not_class_0_gets_the_same_masks_everywhere(tmp_path):
    """classes "object,background": the pseudo-mask an export made from strokes (and predict's and
    the trainer's) took class 0 as the background, 0.165 IoU against 0.801 from `pseudo` and the live
    preview (bug hunt 48, #4). Every path now takes the class named background."""
    from conftest import make_disc_image
    from segmenter.commands.pseudo import pseudo_project

    img, gt, _ = make_disc_image(64, seed=2)
    src = tmp_path / "disc.png"
    Image.fromarray(img).save(src)
    fg_only = np.full(gt.shape, 255, np.uint8)
    ys, xs = np.nonzero(gt == 1)
    fg_only[ys[len(ys) // 2], xs.min() + 3: xs.max() - 3] = 1  # one foreground stroke, nothing else
    masks = {}
    for names, fg in ((["background", "object"], 1), (["object", "background"], 0)):
        p = Project.create(tmp_path / "-".join(names), names)
        iid = p.add_image(src).id
        p.save_scribbles(iid, np.where(fg_only == 1, fg, 255).astype(np.uint8))
        export_project(p, "folder", tmp_path / f"out-{fg}")
        exported = np.array(Image.open(next((tmp_path / f"out-{fg}" / "masks").glob("*.png"))))
        pseudo_project(p)
        stored = p.mask(iid, "pseudo")
        np.testing.assert_array_equal(exported, stored)
        masks[fg] = stored == fg  # the object's pixels
    np.testing.assert_array_equal(masks[0], masks[1])
    assert image_iou_fg(masks[0], gt == 1) > 0.8


def image_iou_fg(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))
