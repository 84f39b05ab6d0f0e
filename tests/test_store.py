"""Unit tests of the project store (annotations/store.py)."""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import numpy as np
import pytest

from annotations import imageio
from annotations.errors import (AnnotationError, ClassInUseError, DuplicateImageError, LabelMapError,
                                NotFoundError, ProjectError, StaleWriteError)
from annotations.schema import SCHEMA_VERSION
from annotations.store import Project, sanitize_name


def _png(tmp_path, name="a.png", shape=(24, 32, 3), seed=0):
    arr = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    p = tmp_path / name
    p.write_bytes(imageio.encode_image_png(arr))
    return p, arr


@pytest.fixture
def proj(tmp_path):
    p = Project.create(tmp_path / "proj", ["background", "cat", "dog"])
    yield p
    p.close()


def test_create_sets_wal_foreign_keys_and_schema_version(proj):
    conn = sqlite3.connect(proj.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert proj._conn().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert proj.class_names == ["background", "cat", "dog"]
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(proj.root)


def test_open_refuses_non_project_and_newer_schema(tmp_path, proj):
    with pytest.raises(ProjectError, match="not a project"):
        Project.open(tmp_path / "nothing")
    conn = sqlite3.connect(proj.db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ProjectError, match="newer release"):
        Project.open(proj.root)


def test_image_copied_with_hash_and_size_and_duplicate_refused(tmp_path, proj):
    path, arr = _png(tmp_path)
    info = proj.add_image(path)
    assert (info.width, info.height, info.channels) == (32, 24, 3)
    assert (proj.root / info.file).read_bytes() == path.read_bytes()
    assert np.array_equal(proj.load_image(info.id), arr)
    with pytest.raises(DuplicateImageError, match="already in the project as a.png"):
        proj.add_image(path, name="other.png")
    assert len(proj.images()) == 1
    # Same stem, other content: a unique name is chosen.
    p2, _ = _png(tmp_path, "sub.png", seed=1)
    info2 = proj.add_image(p2, name="a.png")
    assert info2.name == "a_2.png" and info2.stem == "a_2"


def test_sanitize_name_removes_paths_and_odd_characters():
    assert sanitize_name("../../etc/passwd") == "passwd"
    assert sanitize_name("..\\win\\evil.png") == "evil.png"
    assert sanitize_name("we!rd name?.png") == "we_rd name_.png"
    assert sanitize_name("...") == "image"


def test_non_ascii_names_are_kept_unique_and_found_by_their_original_name(tmp_path, proj):
    assert sanitize_name("café.jpg") == "café.jpg" and sanitize_name("猫.png") == "猫.png"
    assert sanitize_name("Straße 1.png") == "Straße 1.png"
    assert sanitize_name("cafe\u0301.jpg") == "café.jpg"  # macOS's decomposed form, NFC
    assert sanitize_name('a<b>c:d"e|f?g*h\x00i\x07.png') == "a_b_c_d_e_f_g_h_i_.png"
    assert sanitize_name("\u202egnp.exe") == "_gnp.exe"  # a right-to-left override is no letter
    long = sanitize_name("猫" * 300 + ".png")
    assert long.endswith("猫.png") and len(long.encode("utf-8")) <= 200
    infos = {n: proj.add_image(_png(tmp_path, f"src{k}.png", seed=k)[0], name=n)
             for k, n in enumerate(["café.jpg", "猫.png", "犬.png", "dir/we?rd.png"])}
    assert [i.name for i in infos.values()] == ["café.jpg", "猫.png", "犬.png", "we_rd.png"]
    assert [i.orig_name for i in infos.values()] == ["café.jpg", "猫.png", "犬.png", "we?rd.png"]
    assert all(proj.image_by_name(n).id == i.id for n, i in infos.items())
    assert proj.image_by_name("cafe\u0301.jpg").id == infos["café.jpg"].id
    assert proj.image_by_name("犬").id == infos["犬.png"].id  # by stem
    assert proj.image_by_name("we?rd.png").id == infos["dir/we?rd.png"].id
    dup = proj.add_image(_png(tmp_path, "other.png", seed=9)[0], name="猫.png")
    assert (dup.name, dup.orig_name) == ("猫_2.png", "猫.png")
    assert proj.image_by_name("猫.png").id == infos["猫.png"].id
    assert (proj.root / infos["猫.png"].file).is_file() and infos["猫.png"].file.endswith("_猫.png")


def test_names_sanitised_by_an_older_release_keep_working(tmp_path, proj):
    # An older release stored '猫.png' as '_.png' and '犬.png' as '__2.png'.
    cat = proj.add_image(_png(tmp_path, "a.png", seed=1)[0], name="_.png")
    dog = proj.add_image(_png(tmp_path, "b.png", seed=2)[0], name="__2.png")
    assert proj.image_by_name("_.png").id == cat.id and proj.image_by_name("__2.png").id == dog.id
    with pytest.raises(NotFoundError):
        proj.image_by_name("犬.png")  # never the cat image
    assert proj.add_image(_png(tmp_path, "c.png", seed=3)[0], name="猫.png").name == "猫.png"


def test_create_reports_an_uncreatable_folder_and_leaves_nothing_behind(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ProjectError, match=r"file/proj: cannot create the project folder \(Not a directory\)"):
        Project.create(blocker / "proj")
    with pytest.raises(AnnotationError, match=r"the class 'cell' exists already, and class names ignore case \('Cell'\)"):
        Project.create(tmp_path / "new" / "proj", ["bg", "cell", "Cell"])
    with pytest.raises(AnnotationError, match="cannot be empty"):
        Project.create(tmp_path / "new" / "proj", ["bg", ""])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["file"]


def test_cli_init_refuses_one_class_and_a_bad_path_in_one_line(tmp_path, capsys):
    from segmenter.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["init", str(tmp_path / "file" / "proj")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot create the project folder" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["init", str(tmp_path / "one"), "--classes", "cell"]) == 2
    assert "needs at least two classes, e.g. background, cell" in capsys.readouterr().err
    assert not (tmp_path / "one").exists()
    assert main(["init", str(tmp_path / "none"), "--classes", ""]) == 2  # was background, object (bug hunt 44)
    assert "needs at least two classes" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert main(["init", str(tmp_path / "two"), "--classes", "background,cell"]) == 0
    assert Project.open(tmp_path / "two").class_names == ["background", "cell"]


def test_cli_failed_import_create_removes_the_project_it_created(tmp_path, capsys):
    from segmenter.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "junk.png").write_bytes(b"not an image")
    assert main(["import", str(tmp_path / "new" / "proj"), str(src), "--create"]) == 2
    assert "the new project was removed" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["import", str(tmp_path / "p2"), str(tmp_path / "missing"), "--create"]) == 2
    assert not (tmp_path / "p2").exists()
    # A folder that existed keeps what it held, and only that.
    own = tmp_path / "own"
    own.mkdir()
    (own / "notes.txt").write_text("mine")
    assert main(["import", str(own), str(src), "--create"]) == 2
    assert [x.name for x in own.iterdir()] == ["notes.txt"]
    # An existing project is never removed by a failed import.
    assert main(["init", str(tmp_path / "p3")]) == 0
    assert main(["import", str(tmp_path / "p3"), str(src), "--create"]) == 2
    assert (tmp_path / "p3" / "project.db").is_file()
    capsys.readouterr()
    (src / "junk.png").unlink()
    _png(src, "猫.png")
    assert main(["import", str(tmp_path / "p4"), str(src), "--create"]) == 0
    assert Project.open(tmp_path / "p4").images()[0].name == "猫.png"


def test_classes_add_rename_recolor_delete(proj):
    c = proj.add_class("bird", "#112233")
    assert (c.idx, c.color) == (3, (0x11, 0x22, 0x33))
    with pytest.raises(AnnotationError, match="class names ignore case"):  # it said "'Bird' already exists"
        proj.add_class("Bird")
    with pytest.raises(AnnotationError, match="a class named 'bird' already exists"):
        proj.add_class("bird")
    proj.rename_class("bird", "parrot")
    proj.recolor_class(3, (1, 2, 3))
    assert proj.class_info(3).name == "parrot" and proj.class_info("parrot").color == (1, 2, 3)
    with pytest.raises(NotFoundError, match="no class 'fish'"):
        proj.class_info("fish")
    with pytest.raises(AnnotationError, match="not a colour"):
        proj.recolor_class(3, "blue-ish")


def test_delete_class_in_use_needs_force_and_remaps(tmp_path, proj):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    scr = np.full((24, 32), 255, np.uint8)
    scr[0, :4] = 0
    scr[1, :4] = 1
    scr[2, :4] = 2
    proj.save_scribbles(img.id, scr)
    mask = np.zeros((24, 32), np.uint8)
    mask[5:10, 5:10] = 2
    mask[12:14, 12:14] = 1
    proj.save_mask(img.id, mask, "final", source="test")
    proj.set_tag(img.id, 1, "present")
    with pytest.raises(ClassInUseError, match="1 scribble map.*1 mask.*1 tag"):
        proj.delete_class("cat")
    assert proj.class_names == ["background", "cat", "dog"]  # unchanged
    msg = proj.delete_class("cat", force=True)
    assert "deleted" in msg
    assert proj.class_names == ["background", "dog"]
    s = proj.scribbles(img.id)
    assert list(s[0, :4]) == [0] * 4 and list(s[1, :4]) == [255] * 4 and list(s[2, :4]) == [1] * 4
    m = proj.mask(img.id, "final")
    assert (m[5:10, 5:10] == 1).all() and (m[12:14, 12:14] == 255).all()
    assert proj.tags(img.id) == {}
    # The scribbles before the delete are still a version away, in the new class indices.
    proj.undo_scribbles(img.id)
    before = proj.scribbles(img.id)
    assert list(before[1, :4]) == [255] * 4 and list(before[2, :4]) == [1] * 4


def test_delete_class_keeps_at_least_two_classes(tmp_path, proj):
    """Deleting down to one class would turn every label into 255 (and train refuses such a
    project): the store refuses it, with or without force, and changes nothing."""
    img = proj.add_image(_png(tmp_path)[0])
    scr = np.full((24, 32), 255, np.uint8)
    scr[0, :4] = 0
    scr[1, :4] = 2
    proj.save_scribbles(img.id, scr)
    proj.delete_class("cat", force=True)
    before = proj.scribbles(img.id).copy()
    for key in ("dog", "background", 0):
        with pytest.raises(ProjectError, match="needs at least two classes.*left with 1"):
            proj.delete_class(key, force=True)
    assert proj.class_names == ["background", "dog"]
    assert np.array_equal(proj.scribbles(img.id), before) and proj.scribble_version(img.id) == 2


def test_cli_classes_delete_names_force_and_reads_naturally(tmp_path, capsys):
    from segmenter.cli import main

    assert main(["init", str(tmp_path / "p"), "--classes", "background,cat,dog"]) == 0
    p = Project.open(tmp_path / "p")
    img = p.add_image(_png(tmp_path)[0])
    scr = np.full((24, 32), 255, np.uint8)
    scr[0, :4] = 1
    p.save_scribbles(img.id, scr)
    p.set_tag(img.id, 1, "present")
    capsys.readouterr()
    assert main(["classes", str(p.root), "delete", "cat"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("error: class 'cat' is used by 1 scribble map and 1 tag: add --force to delete it "
                           "anyway (its pixels become unlabelled and its tags are removed).")
    assert main(["classes", str(p.root), "delete", "cat", "--force"]) == 0
    assert capsys.readouterr().out.strip() == ("deleted class 'cat' (it was used by 1 scribble map and 1 tag: "
                                               "its pixels are now unlabelled and its tags were removed)")
    assert main(["classes", str(p.root), "delete", "dog", "--force"]) == 2
    err = capsys.readouterr().err
    assert "cannot delete class 'dog'" in err and "at least two classes" in err and len(err.splitlines()) == 1
    assert Project.open(p.root).class_names == ["background", "dog"]


def test_delete_class_remaps_every_scribble_version_of_every_layer(tmp_path, proj):
    img = proj.add_image(_png(tmp_path)[0])
    old = {}
    for layer in ("default", "real"):
        for k in range(3):
            scr = np.full((24, 32), 255, np.uint8)
            scr[k, :4] = 0
            scr[5 + k, :4] = 1  # cat
            scr[10 + k, :4] = 2  # dog
            old[layer, proj.save_scribbles(img.id, scr, layer=layer)] = scr
    proj.undo_scribbles(img.id, "real")  # a redo-able version above the head
    head = proj.scribble_version(img.id)
    proj.delete_class("cat", force=True)
    lut = np.array([0, 255, 1] + [255] * 253, np.uint8)
    for (layer, v), scr in old.items():
        assert np.array_equal(proj.scribbles(img.id, layer, version=v), lut[scr]), (layer, v)
    # Undo after the delete gives old strokes in the new indices, never an index >= num_classes.
    assert proj.scribble_version(img.id) == head + 1
    proj.undo_scribbles(img.id)
    proj.undo_scribbles(img.id)
    assert np.array_equal(proj.scribbles(img.id), lut[old["default", head - 1]])
    assert proj.scribbles(img.id).max() == 255 and set(np.unique(proj.scribbles(img.id))) <= {0, 1, 255}
    # A window that drew on the version before the delete is refused, not remapped silently.
    with pytest.raises(StaleWriteError):
        proj.save_scribbles(img.id, np.ones((24, 32), np.uint8), expected_version=head)
    n = proj._q("SELECT n_pixels FROM scribble_versions WHERE image_id = ? AND layer = 'real' AND version = 1",
                (img.id,))[0][0]
    assert n == int((lut[old["real", 1]] != 255).sum())
    assert proj.integrity_check() == "ok"


def test_scribble_versions_undo_redo_and_stale_write(tmp_path, proj):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    assert proj.scribbles(img.id) is None and proj.scribble_version(img.id) == 0
    a = np.full((24, 32), 255, np.uint8)
    a[3, 3:9] = 1
    b = a.copy()
    b[10, 3:9] = 2
    assert proj.save_scribbles(img.id, a, expected_version=0) == 1
    assert proj.save_scribbles(img.id, b, expected_version=1) == 2
    with pytest.raises(StaleWriteError, match="version 1.*version 2"):
        proj.save_scribbles(img.id, a, expected_version=1)
    assert np.array_equal(proj.scribbles(img.id), b)
    assert proj.undo_scribbles(img.id) == 1 and np.array_equal(proj.scribbles(img.id), a)
    assert proj.undo_scribbles(img.id) == 0 and proj.scribbles(img.id) is None
    with pytest.raises(AnnotationError, match="nothing to undo"):
        proj.undo_scribbles(img.id)
    assert proj.redo_scribbles(img.id) == 1
    assert proj.redo_scribbles(img.id) == 2 and np.array_equal(proj.scribbles(img.id), b)
    with pytest.raises(AnnotationError, match="nothing to redo"):
        proj.redo_scribbles(img.id)
    # A save after undo starts a new branch; the undone version stays readable by number.
    proj.undo_scribbles(img.id)
    v = proj.save_scribbles(img.id, b, expected_version=1)
    assert v == 3 and np.array_equal(proj.scribbles(img.id, version=2), b)
    # Layers are independent.
    proj.save_scribbles(img.id, a, layer="expert")
    assert proj.scribble_layers(img.id) == ["default", "expert"]


def test_fallback_layer_names_the_first_layer_with_strokes(tmp_path, proj):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    assert proj.fallback_layer("default") is None  # no strokes anywhere
    proj.save_scribbles(img.id, np.full((24, 32), 255, np.uint8), layer="real")
    proj.save_scribbles(img.id, np.full((24, 32), 255, np.uint8), layer="zeta")
    assert proj.fallback_layer("default") == "real"
    assert proj.fallback_layer("zeta") is None  # the wanted layer has strokes


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10), np.uint8), "is 10x10 but the image is 32x24"),
    (np.full((24, 32), 3, np.uint8), "class index 3 but the project has 3 classes"),
    (np.zeros((24, 32, 3), np.uint8), "2-D index map"),
    (np.full((24, 32), -1, np.int32), "class indices"),
])
def test_bad_label_maps_refused_and_nothing_written(tmp_path, proj, bad, match):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    with pytest.raises(LabelMapError, match=match):
        proj.save_scribbles(img.id, bad)
    with pytest.raises(LabelMapError, match=match):
        proj.save_mask(img.id, bad, "final", source="t")
    assert proj.scribble_version(img.id) == 0 and proj.mask(img.id, "final") is None


def test_tags_present_absent_unknown(tmp_path, proj):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    proj.set_tag(img.id, 1, "present")
    proj.set_tag(img.id, 2, "absent")
    assert proj.tags(img.id) == {1: "present", 2: "absent"}
    proj.set_tag(img.id, 1, "unknown")
    assert proj.tags(img.id) == {2: "absent"}
    with pytest.raises(AnnotationError, match="tag state"):
        proj.set_tag(img.id, 1, "maybe")
    assert proj.status(img.id) == "tagged"


def test_masks_current_per_kind_provenance_confidence_and_status(tmp_path, proj):
    path, _ = _png(tmp_path)
    img = proj.add_image(path)
    assert proj.status(img.id) == "untouched"
    m1 = np.zeros((24, 32), np.uint8)
    m2 = m1.copy()
    m2[:5] = 1
    conf = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    proj.save_mask(img.id, m1, "pseudo", source="graphcut", confidence=conf)
    assert proj.status(img.id) == "pseudo"
    info = proj.save_mask(img.id, m2, "predicted", source="model", model_version="unet-r18@3", uncertainty=0.4)
    assert (info.kind, info.source, info.model_version, info.uncertainty) == ("predicted", "model", "unet-r18@3", 0.4)
    assert proj.status(img.id) == "predicted"
    assert np.abs(proj.confidence(img.id, "pseudo") - conf).max() <= 1 / 255 + 1e-6
    best, binfo = proj.best_mask(img.id)
    assert binfo.kind == "predicted" and np.array_equal(best, m2)
    proj.save_mask(img.id, m1, "pseudo", source="randomwalk")
    assert proj.mask_info(img.id, "pseudo").source == "randomwalk"
    assert len(proj.mask_history(img.id, "pseudo")) == 2
    proj.save_mask(img.id, m2, "final", source="user")
    assert proj.status(img.id) == "final" and proj.best_mask(img.id)[1].kind == "final"
    with pytest.raises(AnnotationError, match="unknown mask kind"):
        proj.save_mask(img.id, m1, "guess", source="x")
    c = proj.counts()
    assert c["status"]["final"] == 1 and c["masks"] == {"pseudo": 1, "predicted": 1, "final": 1, "imported": 0}


def test_image_sets_and_status_filter(tmp_path, proj):
    ids = [proj.add_image(_png(tmp_path, f"i{k}.png", seed=k)[0]).id for k in range(3)]
    proj.add_to_set("train", ids[:2])
    assert proj.image_set("train") == ids[:2] and proj.image_sets() == ["train"]
    assert [i.id for i in proj.images(image_set="train")] == ids[:2]
    with pytest.raises(NotFoundError, match="no image set named 'val'"):
        proj.image_set("val")
    proj.set_tag(ids[2], 0, "present")
    assert [i.id for i in proj.images(status="tagged")] == [ids[2]]
    assert [i.id for i in proj.images(status="untouched")] == ids[:2]


def test_concurrent_writers_from_threads_lose_nothing(tmp_path, proj):
    ids = [proj.add_image(_png(tmp_path, f"t{k}.png", seed=k)[0]).id for k in range(4)]
    errors = []

    def writer(image_id):
        try:
            for v in range(8):
                s = np.full((24, 32), 255, np.uint8)
                s[v, :] = image_id % 3
                proj.save_scribbles(image_id, s, expected_version=v)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in ids:
        assert proj.scribble_version(i) == 8
        for v in range(1, 9):
            assert (proj.scribbles(i, version=v)[v - 1] == i % 3).all()
    assert proj.integrity_check() == "ok"


def test_copy_to_is_consistent(tmp_path, proj):
    img = proj.add_image(_png(tmp_path)[0])
    s = np.full((24, 32), 1, np.uint8)
    proj.save_scribbles(img.id, s)
    q = proj.copy_to(tmp_path / "copy")
    assert np.array_equal(q.scribbles(img.id), s) and q.class_names == proj.class_names


def test_class_zero_is_grey_as_a_background_and_coloured_as_a_real_class(tmp_path):
    bg = Project.create(tmp_path / "a", classes=["background", "cell"])
    sky = Project.create(tmp_path / "b", classes=["Sky", "Road"])
    assert bg.class_info(0).hex == "#808080"  # mid grey: visible on dark scans and bright photos
    assert sky.class_info(0).hex not in ("#808080", "#404040")
    assert len({c.hex for c in sky.classes()}) == 2
    bg.close()
    sky.close()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_written_files_get_the_mode_of_a_new_file_under_the_umask(tmp_path, umask):
    """Every image, stroke map, mask and confidence map the store wrote was 0600 whatever the umask
    (tempfile.mkstemp), so a colleague sharing the project folder could read project.db but no
    file; an export folder was 0700 (mkdtemp). Now: 0666 / 0777 less the umask, as any new file."""
    from annotations.formats import export_project

    old = os.umask(umask)
    try:
        p = Project.create(tmp_path / "proj", ["background", "cat"])
        path, _ = _png(tmp_path)
        img = p.add_image(path)
        s = np.full((24, 32), 255, np.uint8)
        s[2, 2:9] = 1
        p.save_scribbles(img.id, s)
        p.save_mask(img.id, np.zeros((24, 32), np.uint8), "final", source="t",
                    confidence=np.ones((24, 32), np.float32))
        written = [f for f in p.root.rglob("*") if f.is_file() and not f.name.startswith("project.db")]
        assert len(written) == 4  # image, strokes, mask, confidence
        # project.db (and its -wal / -shm) too: SQLite made it 0644 whatever the umask (bug hunt 44)
        dbs = [f for f in p.root.iterdir() if f.name.startswith("project.db")]
        assert len(dbs) >= 2 and {oct(f.stat().st_mode & 0o777) for f in dbs} == {oct(0o666 & ~umask)}
        copy = p.copy_to(tmp_path / "copy")
        assert oct((copy.root / "project.db").stat().st_mode & 0o777) == oct(0o666 & ~umask)
        copy.close()
        assert {f.relative_to(p.root).as_posix(): oct(f.stat().st_mode & 0o777) for f in written} == \
            {f.relative_to(p.root).as_posix(): oct(0o666 & ~umask) for f in written}
        # a file replaced atomically (models are saved this way too) takes the new mode, not the old one's
        target = tmp_path / "model.safetensors"
        target.write_bytes(b"old")
        target.chmod(0o600)
        imageio.atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o666 & ~umask
        assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".model")] == []  # no temp file left
        out = tmp_path / "export"
        export_project(p, "folder", out)
        assert out.stat().st_mode & 0o777 == 0o777 & ~umask
        assert {oct(f.stat().st_mode & 0o777) for f in out.rglob("*") if f.is_file()} == {oct(0o666 & ~umask)}
    finally:
        os.umask(old)


def _two_images_a_drawn(tmp_path, proj):
    """Images a.png and b.png; a stroke of class 1 saved on a (returned too), a moment ago."""
    a = proj.add_image(_png(tmp_path, "a.png")[0])
    b = proj.add_image(_png(tmp_path, "b.png", seed=1)[0])
    s = np.full((24, 32), 255, np.uint8)
    s[2, 2:9] = 1
    proj.save_scribbles(a.id, s)
    time.sleep(0.005)
    return a, b, s


def test_final_mask_older_than_strokes_is_known_and_counted(tmp_path, proj, capsys):
    """Strokes drawn after a final mask was accepted (without accepting again) were invisible to
    the store: Project.final_older_than_strokes / finals_older_than_strokes say so, counts() and
    `segmenter status` count them. A mask and strokes stored in one transaction (an import) are
    not older than each other."""
    from segmenter.cli import main

    a, b, s = _two_images_a_drawn(tmp_path, proj)
    final = np.zeros((24, 32), np.uint8)
    proj.save_mask(a.id, final, "final", source="app:accepted-preview(hybrid)")
    assert not proj.final_older_than_strokes(a.id) and proj.finals_older_than_strokes() == []
    time.sleep(0.005)
    s2 = s.copy()
    s2[10, 2:20] = 1  # a stroke drawn after Accept
    proj.save_scribbles(a.id, s2)
    proj.save_scribbles(a.id, s2, layer="other")
    assert proj.final_older_than_strokes(a.id) and proj.layers_drawn_after(a.id) == ["default"]  # its stroke layer
    assert not proj.final_older_than_strokes(b.id) and proj.layers_drawn_after(b.id) == []
    assert proj.finals_older_than_strokes() == [a.id] and proj.counts()["finals_older_than_strokes"] == 1
    assert main(["status", str(proj.root)]) == 0
    out = capsys.readouterr().out
    assert "final masks with strokes drawn after them: 1 (a.png): an export corrects them where those strokes " \
           "contradict them; review them and accept again" in out
    # stored together, in one transaction (as an import stores a dataset's masks and strokes)
    with proj.transaction():
        proj.save_mask(b.id, final, "final", source="import:x")
        time.sleep(0.005)
        proj.save_scribbles(b.id, s)
    assert not proj.final_older_than_strokes(b.id)
    time.sleep(0.005)
    proj.save_mask(a.id, final, "final", source="review")  # accepted again
    assert proj.finals_older_than_strokes() == [] and proj.counts()["finals_older_than_strokes"] == 0
    assert main(["status", str(proj.root)]) == 0
    assert "final masks with strokes drawn after them: 0\n" in capsys.readouterr().out


def test_strokes_of_another_layer_do_not_make_a_final_mask_older(tmp_path, proj, capsys):
    """A final mask accepted from the strokes of layer 'default' was flagged older than the strokes
    (status, the app's list, an export rewrote it) when a dataset's scribble set (layer 'real') was
    imported after it. Only the image's stroke layer counts: the project's scribble_layer when the
    image has strokes there, else the first layer with strokes, as an export picks it."""
    from segmenter.cli import main

    a, b, s = _two_images_a_drawn(tmp_path, proj)
    proj.save_mask(a.id, np.zeros((24, 32), np.uint8), "final", source="app:accepted-preview(hybrid)")
    proj.save_mask(b.id, np.zeros((24, 32), np.uint8), "final", source="app:mask-editor")
    time.sleep(0.005)
    proj.save_scribbles(a.id, s, layer="real")  # imported later
    proj.save_scribbles(b.id, s, layer="real")  # b's only strokes: its stroke layer
    assert proj.stroke_layer(a.id) == "default" and proj.stroke_layer(b.id) == "real"
    assert not proj.final_older_than_strokes(a.id) and proj.layers_drawn_after(a.id) == []
    assert proj.layers_changed_since(a.id, "") == ["default"]
    assert proj.final_older_than_strokes(b.id) and proj.layers_drawn_after(b.id) == ["real"]
    assert proj.finals_older_than_strokes() == [b.id] and proj.counts()["finals_older_than_strokes"] == 1
    assert main(["status", str(proj.root)]) == 0
    assert "final masks with strokes drawn after them: 1 (b.png)" in capsys.readouterr().out
    proj.scribble_layer = "real"  # e.g. app.py --layer real: its strokes are the ones that count
    assert proj.finals_older_than_strokes() == [a.id, b.id] and proj.layers_drawn_after(a.id) == ["real"]


def test_deleting_a_class_makes_no_final_mask_older_than_the_strokes(tmp_path, proj, capsys):
    """`classes delete --force` re-saves every scribble map with the classes renumbered, and every
    final mask was then flagged "strokes drawn after them". The renumbered head keeps the time of
    the version it renumbers; a window drawing on the old version is still refused as stale."""
    from segmenter.cli import main

    a = proj.add_image(_png(tmp_path, "a.png")[0])
    s = np.full((24, 32), 255, np.uint8)
    s[2, 2:9] = 2
    s[5, 2:9] = 0
    v = proj.save_scribbles(a.id, s)
    time.sleep(0.005)
    proj.save_mask(a.id, np.zeros((24, 32), np.uint8), "final", source="app:accepted-preview(hybrid)")
    time.sleep(0.005)
    proj.delete_class("cat", force=True)
    assert proj.scribble_version(a.id) > v and (proj.scribbles(a.id)[2, 2:9] == 1).all()
    assert not proj.final_older_than_strokes(a.id) and proj.finals_older_than_strokes() == []
    assert main(["status", str(proj.root)]) == 0
    assert "final masks with strokes drawn after them: 0\n" in capsys.readouterr().out
    with pytest.raises(StaleWriteError):
        proj.save_scribbles(a.id, proj.scribbles(a.id), expected_version=v)
    time.sleep(0.005)
    proj.save_scribbles(a.id, proj.scribbles(a.id))  # a real save after the mask still counts
    assert proj.finals_older_than_strokes() == [a.id]


def test_import_note_names_the_image_whose_stem_clashes(tmp_path, proj):
    """Importing slice16.png and slice16.tif said "another image has the name, ignoring case";
    the names differ by extension: the note names the image with the same name without extension."""
    d = tmp_path / "imgs"
    d.mkdir()
    png = _png(tmp_path, "slice16.png")[0]
    (d / "slice16.png").write_bytes(png.read_bytes())
    (d / "Slice16.tif").write_bytes(_png(tmp_path, "x.png", seed=3)[0].read_bytes())
    (d / "other.png").write_bytes(_png(tmp_path, "y.png", seed=4)[0].read_bytes())
    s = proj.import_images([d / "slice16.png", d / "Slice16.tif", d / "other.png"])
    assert s.notes == ["note: Slice16.tif is named Slice16_2.tif in the project (the image slice16.png has the same "
                       "name without its extension, ignoring case; an export writes one file per name)"], s.notes
    s = proj.import_images([d / "other.png"])
    assert not s.notes  # a duplicate: no note
    (d / "OTHER.png").write_bytes(_png(tmp_path, "z.png", seed=5)[0].read_bytes())
    s = proj.import_images([d / "OTHER.png"])
    assert s.notes == ["note: OTHER.png is named OTHER_2.png in the project (the image other.png has that name, "
                       "ignoring case)"], s.notes


def test_an_import_says_which_images_have_transparency_it_does_not_use(tmp_path):
    from PIL import Image

    proj = Project.create(tmp_path / "p", ["background", "obj"])
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :10, 3] = 0  # a transparent left third
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "plain.png")
    s = proj.import_images([tmp_path / "cut.png", tmp_path / "plain.png"])
    assert len(s.added) == 2
    assert [n for n in s.notes if "transparency" in n] == [
        "note: 1 image(s) have transparency, which the tool does not use: their transparent areas are shown and "
        "segmented as the colours stored beneath them (cut.png)"]
    assert proj.load_image(s.added[0].id).shape == (20, 30, 3)


def test_class_0_named_as_background_is_grey_and_labelmes_name_counts(tmp_path):
    """A class 0 named as a background (labelme's ``_background_`` too) gets the grey background
    colour, a real class 0 (camvid's Sky) the first class colour; the instance formats leave out a
    class 0 of the narrower list only, so a class 0 named "other" keeps its polygons in COCO."""
    from annotations.formats._common import INSTANCE_BACKGROUND_NAMES, background_class
    from annotations.store import BACKGROUND_NAMES, FIRST_CLASS_COLOR, default_color

    assert set(INSTANCE_BACKGROUND_NAMES) < set(BACKGROUND_NAMES)
    grey = default_color(0, "background")
    assert default_color(0, "_background_") == grey != FIRST_CLASS_COLOR == default_color(0, "Sky")
    assert background_class(Project.create(tmp_path / "a", ["_background_", "cat"]), "auto") == 0
    assert background_class(Project.create(tmp_path / "b", ["other", "cat"]), "auto") is None


def test_classes_delete_says_which_models_stop_fitting(tmp_path, capsys):
    """A model's classes must be the project's to predict it: ``classes delete`` said nothing of the
    models it leaves behind (bug hunt 43, #6); it names them, before (refusal) and after."""
    import json

    from segmenter.cli import main

    p = Project.create(tmp_path / "p", ["background", "cat", "dog"])
    p.models_dir.mkdir(exist_ok=True)
    for name, classes in (("m1", ["background", "cat", "dog"]), ("old", ["background", "cat"])):
        (p.models_dir / f"{name}.json").write_text(json.dumps({"config": {"classes": classes}}))
    assert p.models_for_classes() == ["m1"]
    info = p.add_image(_png(tmp_path)[0])
    m = np.zeros((24, 32), np.uint8)
    m[:5] = 2
    p.save_mask(info.id, m, "final", source="t")
    assert main(["classes", str(p.root), "delete", "dog"]) == 2
    err = capsys.readouterr().err
    assert "1 model(s) trained for these classes (m1) cannot predict this project after it" in err
    assert main(["classes", str(p.root), "delete", "dog", "--force"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 model(s) trained for the classes before the deletion (m1) cannot predict" in out
    assert p.models_for_classes() == ["old"]  # trained for the classes as they are now


def test_a_project_of_schema_1_opens_and_records_cleared_tags(tmp_path):
    """Schema 2 adds tag_clears (when a tag was set back to unknown); a project written by a release
    of schema 1 is migrated when opened, its tags kept."""
    import sqlite3

    p = Project.create(tmp_path / "p", ["bg", "cat"])
    path, _ = _png(tmp_path)
    iid = p.add_image(path).id
    p.set_tag(iid, 1, "present")
    p.close()
    conn = sqlite3.connect(tmp_path / "p" / "project.db")
    conn.execute("DROP TABLE tag_clears")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    q = Project.open(tmp_path / "p")
    assert q.tags(iid) == {1: "present"} and q.tag_cleared(iid, 1) is None
    q.set_tag(iid, 1, "unknown")
    assert q.tags(iid) == {} and q.tag_cleared(iid, 1) is not None
    q.set_tag(iid, 1, "absent")
    assert q.tag_cleared(iid, 1) is None
    q.close()
    with sqlite3.connect(tmp_path / "p" / "project.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


def test_class_epoch_moves_only_when_class_numbers_change_meaning(tmp_path):
    """A page may keep saving with its class numbers while the epoch stands (app.handlers)."""
    p = Project.create(tmp_path / "p", ["bg", "cat", "dog"])
    e = p.class_epoch
    p.rename_class("cat", "kitten")
    p.add_class("bird")
    p.recolor_class("dog", "#00ff00")
    assert p.class_epoch == e
    p.delete_class("bird")
    assert p.class_epoch == e + 1
    q = Project.create(tmp_path / "q", ["bg", "fg"])
    q.set_classes(["a", "b", "c"])
    assert q.class_epoch == 1


def test_masks_stamp_moves_with_masks_not_from_a_source(tmp_path):
    p = Project.create(tmp_path / "p", ["bg", "fg"])
    path, _ = _png(tmp_path)
    iid = p.add_image(path).id
    m = np.zeros((p.image_info(iid).height, p.image_info(iid).width), np.uint8)
    assert p.masks_stamp("app:") == 0
    p.save_mask(iid, m, "final", source="cli:accept(predicted x)")
    first = p.masks_stamp("app:")
    p.save_mask(iid, m, "final", source="app:mask-editor")  # the app's own: not counted
    assert p.masks_stamp("app:") == first and p.masks_stamp() > first
