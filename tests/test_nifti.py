"""The nifti format: volumes sliced into images, label volumes as masks, masks stacked back."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from annotations.errors import AnnotationError  # noqa: E402
from annotations.formats import export_project, import_dataset  # noqa: E402
from annotations.formats.nifti import ORIENTATION  # noqa: E402
from annotations.importer import import_path  # noqa: E402
from annotations.store import Project  # noqa: E402

CLASSES = ["background", "RV", "myo", "LV"]
SHAPE = (24, 20, 5)


def affine() -> np.ndarray:
    a = np.diag([1.5, 1.5, 8.0, 1.0])
    a[:3, 3] = [-17.0, 30.5, 4.0]
    a[0, 1] = 0.2  # a little shear: not a pure scaling
    return a


def volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    """Intensities like an MRI: int16, a bright disc per slice, a few outliers."""
    rng = np.random.default_rng(seed)
    xx, yy = np.mgrid[: shape[0], : shape[1]]
    vol = np.zeros(shape, np.int16)
    for k in range(shape[2]):
        disc = (xx - 10 - k) ** 2 + (yy - 9) ** 2 < 30
        vol[:, :, k] = np.where(disc, 800, 200) + rng.integers(-50, 50, shape[:2])
    vol[0, 0, 0] = 30000  # an outlier the percentile window ignores
    return vol


def labels(shape=SHAPE, blank=()) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        if k in blank:
            continue
        lab[3 + k : 10 + k, 4:9, k] = 1
        lab[12:20, 2 + k : 6 + k, k] = 3
        lab[14, 14, k] = 2
    return lab


def save(path: Path, data: np.ndarray, zooms=(1.5, 1.5, 8.0)) -> Path:
    img = nib.Nifti1Image(data, affine())
    img.header.set_zooms(zooms[: data.ndim])
    nib.save(img, str(path))
    return path


@pytest.fixture
def proj(tmp_path) -> Project:
    return Project.create(tmp_path / "proj", CLASSES)


@pytest.fixture
def acdc(tmp_path) -> Path:
    """ACDC-style: patient001_frame01.nii.gz beside patient001_frame01_gt.nii.gz, in separate folders."""
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    (d / "gt").mkdir()
    save(d / "img" / "patient001_frame01.nii.gz", volume(0))
    save(d / "img" / "patient002_frame01.nii.gz", volume(1))
    save(d / "gt" / "patient001_frame01_gt.nii.gz", labels())
    save(d / "gt" / "patient002_frame01_gt.nii.gz", labels(blank=(2,)))
    return d


def slice_ids(p: Project, stem: str) -> list[int]:
    return json.loads((p.root / "volumes" / f"{stem}.json").read_text())["image_ids"]


def test_round_trip_of_volume_and_labels(proj, tmp_path):
    vol = save(tmp_path / "case.nii.gz", volume())
    save(tmp_path / "case_gt.nii.gz", labels())
    s = import_dataset(proj, "nifti", vol, masks=str(tmp_path / "case_gt.nii.gz"))
    assert len(s.added) == 5 and s.masks == 5
    res = export_project(proj, "nifti", tmp_path / "out", masks="best")
    assert (res.images, res.masks) == (0, 5)
    out = nib.load(str(tmp_path / "out" / "labels" / "case.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels())
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, affine(), atol=1e-5)
    np.testing.assert_allclose(out.header.get_zooms(), (1.5, 1.5, 8.0), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        ["case.nii.gz", "labels.json", "manifest.json"]


def test_slices_are_named_ordered_oriented_and_in_the_image_set(proj, tmp_path):
    save(tmp_path / "heart.nii", volume())
    import_dataset(proj, "nifti", tmp_path / "heart.nii")
    names = [i.name for i in proj.images()]
    assert names == [f"heart_z{k:03d}.png" for k in range(5)]
    ids = slice_ids(proj, "heart")
    assert proj.image_set("heart") == ids == [i.id for i in proj.images()]
    img = proj.load_image(ids[3])
    assert img.shape == (20, 24) and img.dtype == np.uint8 and img.ndim == 2  # rows: second array axis
    rec = json.loads((proj.root / "volumes" / "heart.json").read_text())
    assert rec["source"] == "heart.nii" and rec["shape"] == [24, 20, 5] and rec["orientation"] == ORIENTATION
    assert rec["sform_code"] == 2 and rec["zooms"] == [1.5, 1.5, 8.0]
    # the disc of slice 3 is centred at array (13, 9): row 9, column 13 of the image
    assert img[9, 13] > 150 and img[9, 2] < 100


def test_window_option_sets_the_intensity_window(proj, tmp_path):
    v = volume()
    save(tmp_path / "a.nii.gz", v)
    save(tmp_path / "b.nii.gz", v)
    import_dataset(proj, "nifti", tmp_path / "a.nii.gz")  # percentiles: the outlier ignored
    import_dataset(proj, "nifti", tmp_path / "b.nii.gz", window="0,1000")
    a, b = proj.load_image(slice_ids(proj, "a")[0]), proj.load_image(slice_ids(proj, "b")[0])
    want = np.clip((v[:, :, 0].T.astype(float) - 0) * 255 / 1000 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(b, want)
    assert a[0, 0] == 255 and b[0, 0] == 255 and a.max() == 255 and a[9, 10] > b[9, 10]
    rec = json.loads((proj.root / "volumes" / "b.json").read_text())
    assert rec["window"] == [0.0, 1000.0] and rec["window_from"] == "option"
    with pytest.raises(AnnotationError, match="window=3: use LOW,HIGH"):
        import_dataset(proj, "nifti", tmp_path / "a.nii.gz", window="3")


def test_masks_folder_is_matched_by_stem_with_a_gt_suffix(proj, acdc, tmp_path):
    s = import_dataset(proj, "nifti", acdc / "img", masks=str(acdc / "gt"), kind="final")
    assert len(s.added) == 10 and s.masks == 10
    for k, iid in enumerate(slice_ids(proj, "patient002_frame01")):
        np.testing.assert_array_equal(proj.mask(iid, "final"), labels(blank=(2,))[:, :, k].T)
        assert proj.mask(iid, "imported") is None
    assert proj.image_sets() == ["patient001_frame01", "patient002_frame01"]


def test_label_volumes_beside_their_images_are_their_masks(proj, acdc):
    for f in (acdc / "gt").iterdir():
        f.rename(acdc / "img" / f.name)
    s = import_path(proj, acdc / "img")  # detected: a folder of NIfTI volumes
    assert len(s.added) == 10 and s.masks == 10
    assert not any("_gt" in i.name for i in proj.images())


def test_out_of_range_label_is_refused_and_nothing_is_imported(proj, tmp_path):
    save(tmp_path / "a.nii.gz", volume())
    save(tmp_path / "b.nii.gz", volume(1))
    (tmp_path / "gt").mkdir()
    save(tmp_path / "gt" / "a_seg.nii.gz", labels())
    bad = labels()
    bad[1, 1, 4] = 7
    save(tmp_path / "gt" / "b_seg.nii.gz", bad)
    before = files_of(proj)
    with pytest.raises(AnnotationError, match=r"b_seg.nii.gz: label value 7 .*0 background, 1 RV, 2 myo, 3 LV"):
        import_dataset(proj, "nifti", tmp_path, masks=str(tmp_path / "gt"))
    assert proj.images() == [] and proj.image_sets() == [] and files_of(proj) == before


def files_of(p: Project) -> list[str]:
    """The project's files but its database's."""
    return sorted(str(f.relative_to(p.root)) for f in p.root.rglob("*") if f.is_file()
                  and not f.name.startswith("project.db"))


def test_mismatched_mask_shape_is_refused(proj, tmp_path):
    save(tmp_path / "a.nii.gz", volume())
    save(tmp_path / "m.nii.gz", labels(shape=(24, 20, 4)))
    with pytest.raises(AnnotationError, match=r"m.nii.gz: .*shape \(24, 20, 4\) differs .*\(24, 20, 5\) .*a.nii.gz"):
        import_dataset(proj, "nifti", tmp_path / "a.nii.gz", masks=str(tmp_path / "m.nii.gz"))
    assert proj.images() == []


def test_4d_is_refused_and_a_singleton_4th_axis_is_squeezed(proj, tmp_path):
    save(tmp_path / "cine.nii.gz", np.zeros((8, 6, 3, 4), np.int16), zooms=(1, 1, 1, 1))
    with pytest.raises(AnnotationError, match=r"cine.nii.gz: a 4-D volume of shape \(8, 6, 3, 4\).*split the frames"):
        import_dataset(proj, "nifti", tmp_path / "cine.nii.gz")
    assert proj.images() == []
    save(tmp_path / "one.nii.gz", volume()[..., None], zooms=(1.5, 1.5, 8, 1))
    assert len(import_dataset(proj, "nifti", tmp_path / "one.nii.gz").added) == 5


def test_files_that_are_not_nifti_are_refused_in_one_line(proj, tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "fake.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    full = save(tmp_path / "cut.nii.gz", volume()).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(full[: len(full) // 2])
    (tmp_path / "empty").mkdir()
    for path, want in [("scan.png", "scan.png: not a NIfTI file"), ("fake.nii.gz", "fake.nii.gz: not a readable NIfTI"),
                       ("cut.nii.gz", "cut.nii.gz: not a readable NIfTI"), ("empty", "empty: no .nii")]:
        with pytest.raises(AnnotationError) as e:
            import_dataset(proj, "nifti", tmp_path / path)
        assert str(e.value).startswith(want) and "\n" not in str(e.value), str(e.value)
    assert proj.images() == []


def test_reimporting_a_volume_adds_no_image_and_another_volume_of_that_name_is_renamed(proj, tmp_path):
    save(tmp_path / "a.nii.gz", volume())
    import_dataset(proj, "nifti", tmp_path / "a.nii.gz")
    save(tmp_path / "gt.nii.gz", labels())
    s = import_dataset(proj, "nifti", tmp_path / "a.nii.gz", masks=str(tmp_path / "gt.nii.gz"))
    assert s.added == [] and s.masks == 5 and "already in the project as 'a'" in " ".join(s.notes)
    with pytest.raises(AnnotationError, match="already in the project.*window"):
        import_dataset(proj, "nifti", tmp_path / "a.nii.gz", window="0,500")
    (tmp_path / "other").mkdir()
    save(tmp_path / "other" / "a.nii.gz", volume(5))
    s = import_dataset(proj, "nifti", tmp_path / "other" / "a.nii.gz")
    assert len(s.added) == 5 and s.added[0].name == "a_2_z000.png"
    assert "added as the new volume 'a_2'" in " ".join(s.notes)
    assert len(proj.images()) == 10 and proj.image_sets() == ["a", "a_2"]


def test_export_notes_slices_without_masks_unlabelled_pixels_and_other_images(proj, tmp_path):
    save(tmp_path / "v.nii.gz", volume())
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz")
    ids = slice_ids(proj, "v")
    m = labels()[:, :, 1].T.copy()
    m[0, :4] = 255
    proj.save_mask(ids[1], m, "final", source="t")
    proj.save_mask(ids[3], labels()[:, :, 3].T, "predicted", source="t")
    flat = proj.add_image(_png(np.full((7, 9), 40, np.uint8)), name="photo.png")
    proj.save_mask(flat.id, np.ones((7, 9), np.uint8), "final", source="t")
    res = export_project(proj, "nifti", tmp_path / "out")
    text = "\n".join(res.lines())
    assert "slices without a mask were written as 0: v (3 of 5)" in text
    assert "1 slice(s) have unlabelled pixels (255)" in text
    assert "1 image(s) did not come from a NIfTI volume" in text
    assert res.masks == 3 and res.mask_kinds == {"final": 2, "predicted": 1}
    got = np.asanyarray(nib.load(str(tmp_path / "out" / "labels" / "v.nii.gz")).dataobj)
    assert not got[:, :, [0, 2, 4]].any() and got.max() == 3
    want1 = np.where(m == 255, 0, m).T
    np.testing.assert_array_equal(got[:, :, 1], want1)
    unl = np.asanyarray(nib.load(str(tmp_path / "out" / "unlabelled" / "v.nii.gz")).dataobj)
    assert unl.sum() == 4 and unl[:4, 0, 1].all()
    assert np.asanyarray(nib.load(str(tmp_path / "out" / "labels" / "photo.nii.gz")).dataobj).shape == (9, 7, 1)
    res = export_project(proj, "nifti", tmp_path / "out2", others="skip")
    assert not (tmp_path / "out2" / "labels" / "photo.nii.gz").exists()
    assert "1 image(s) did not come from a NIfTI volume: left out" in "\n".join(res.lines())
    # the export imported back unchanged: nothing stored (255 restored, blank slices skipped), the kinds stay
    q = import_dataset(proj, "nifti", tmp_path / "out")
    assert q.masks == 0 and q.added == [], q.lines()
    assert "3 unchanged masks skipped" in " ".join(q.notes)
    np.testing.assert_array_equal(proj.mask(ids[1], "final"), m)
    assert proj.mask_info(ids[3], "imported") is None and proj.statuses()[ids[3]] == "predicted"
    # slice 3 edited elsewhere: it comes back as that slice's final mask
    img = nib.load(str(tmp_path / "out" / "labels" / "v.nii.gz"))
    vol = np.asanyarray(img.dataobj).copy()
    vol[:, :, 3] = 0
    vol[2:6, 2:6, 3] = 2
    nib.save(nib.Nifti1Image(vol, img.affine, img.header), str(tmp_path / "out" / "labels" / "v.nii.gz"))
    q = import_dataset(proj, "nifti", tmp_path / "out")
    assert q.masks == 1, q.lines()
    np.testing.assert_array_equal(proj.mask(ids[3], "final"), vol[:, :, 3].T)


def _png(arr: np.ndarray) -> bytes:
    from annotations.imageio import encode_image_png

    return encode_image_png(arr)


def test_cli_import_detects_nifti_and_exports(acdc, tmp_path, capsys):
    from segmenter.cli import main

    root = tmp_path / "cli"
    vol = acdc / "img" / "patient001_frame01.nii.gz"
    assert main(["import", str(root), str(vol), "--create", "--option",
                 f"masks={acdc / 'gt' / 'patient001_frame01_gt.nii.gz'}"]) == 2  # 2 classes: value 2 refused
    err = capsys.readouterr().err
    assert "label value 2 is not a class of this project" in err and not (root / "project.db").exists()
    assert main(["init", str(root), "--classes", ",".join(CLASSES)]) == 0
    assert main(["import", str(root), str(vol), "--option", f"masks={acdc / 'gt'}"]) == 0
    assert "added 5 image(s), 5 mask(s)" in capsys.readouterr().out
    assert main(["export", str(root), "--format", "nifti", "--masks", "final", "--out", str(tmp_path / "o1")]) == 0
    assert "slices without a mask were written as 0: patient001_frame01 (5 of 5)" in capsys.readouterr().out
    assert main(["export", str(root), "--format", "nifti", "--out", str(tmp_path / "o2")]) == 0
    got = np.asanyarray(nib.load(str(tmp_path / "o2" / "labels" / "patient001_frame01.nii.gz")).dataobj)
    np.testing.assert_array_equal(got, labels())
    (tmp_path / "bad.nii").write_bytes(b"nope")
    assert main(["import", str(root), str(tmp_path / "bad.nii")]) == 2
    assert "bad.nii: not a readable NIfTI file" in capsys.readouterr().err
    assert main(["import", str(root), str(vol), "--format", "nifti", "--option", "window=x"]) == 2
    assert "window=x" in capsys.readouterr().err


# ----------------------------------------------------------------------------- re-imports and removed slices
def test_a_same_named_volume_added_as_stem_2_is_found_again_with_its_labels(proj, tmp_path):
    """The second file named a.nii.gz (other voxels) became 'a_2'; importing it again adds no image
    and puts its label volume onto the a_2 slices, not onto a new a_3."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    save(tmp_path / "one" / "a.nii.gz", volume(0))
    save(tmp_path / "two" / "a.nii.gz", volume(7))
    save(tmp_path / "two" / "a_gt.nii.gz", labels())
    import_dataset(proj, "nifti", tmp_path / "one" / "a.nii.gz")
    assert len(import_dataset(proj, "nifti", tmp_path / "two" / "a.nii.gz").added) == 5
    s = import_dataset(proj, "nifti", tmp_path / "two" / "a.nii.gz")
    assert s.added == [] and "already in the project as 'a_2'" in " ".join(s.notes), s.lines()
    s = import_dataset(proj, "nifti", tmp_path / "two" / "a.nii.gz", masks=str(tmp_path / "two" / "a_gt.nii.gz"))
    assert s.added == [] and s.masks == 5, s.lines()
    assert proj.image_sets() == ["a", "a_2"] and len(proj.images()) == 10
    for k, iid in enumerate(slice_ids(proj, "a_2")):
        np.testing.assert_array_equal(proj.mask(iid, "imported"), labels()[:, :, k].T)
    assert all(proj.mask(iid, "imported") is None for iid in slice_ids(proj, "a"))


def test_removed_slices_are_put_back_by_a_reimport_with_their_labels(proj, tmp_path):
    save(tmp_path / "v.nii.gz", volume())
    save(tmp_path / "v_gt.nii.gz", labels())
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz", window="0,1000")
    first = [proj.load_image(i) for i in slice_ids(proj, "v")]
    for iid in slice_ids(proj, "v"):  # every slice, as remove-image does
        proj.delete_image(iid)
    s = import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "v_gt.nii.gz"))
    assert len(s.added) == 5 and s.masks == 5, s.lines()
    assert "5 slice(s) removed from the project were put back (window 0,1000" in " ".join(s.notes)
    ids = slice_ids(proj, "v")
    assert ids == [i.id for i in s.added] and proj.image_set("v") == ids
    assert [proj.image_info(i).name for i in ids] == [f"v_z{k:03d}.png" for k in range(5)]
    for k, iid in enumerate(ids):  # made with the recorded window, not the percentiles of this import
        np.testing.assert_array_equal(proj.load_image(iid), first[k])
        np.testing.assert_array_equal(proj.mask(iid, "imported"), labels()[:, :, k].T)
    # one slice removed: only that one comes back, the others keep their masks
    proj.delete_image(ids[2])
    s = import_dataset(proj, "nifti", tmp_path / "v.nii.gz")
    assert [i.name for i in s.added] == ["v_z002.png"] and len(proj.images()) == 5
    assert slice_ids(proj, "v")[:2] == ids[:2] and slice_ids(proj, "v")[2] == s.added[0].id
    s = import_dataset(proj, "nifti", tmp_path / "v.nii.gz")
    assert s.added == [] and "no image added" in " ".join(s.notes)
    out = export_project(proj, "nifti", tmp_path / "out")
    got = np.asanyarray(nib.load(str(tmp_path / "out" / "labels" / "v.nii.gz")).dataobj)
    assert out.masks == 4 and not got[:, :, 2].any() and np.array_equal(got[:, :, 3], labels()[:, :, 3])


def test_an_edited_export_skips_slices_removed_since_with_a_note(proj, tmp_path):
    save(tmp_path / "v.nii.gz", volume())
    save(tmp_path / "v_gt.nii.gz", labels())
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "v_gt.nii.gz"))
    export_project(proj, "nifti", tmp_path / "out")
    img = nib.load(str(tmp_path / "out" / "labels" / "v.nii.gz"))
    edit = np.asanyarray(img.dataobj).copy()
    edit[0:4, 0:4, :] = 2
    nib.save(nib.Nifti1Image(edit, img.affine, img.header), str(tmp_path / "out" / "labels" / "v.nii.gz"))
    ids = slice_ids(proj, "v")
    proj.delete_image(ids[1])
    s = import_dataset(proj, "nifti", tmp_path / "out")
    assert s.masks == 4, s.lines()
    assert "1 slice(s) of the export were removed from the project since (remove-image); their labels were " \
        "skipped (v_z001.png)" in " ".join(s.notes)
    for k in (0, 2, 3, 4):
        np.testing.assert_array_equal(proj.mask(ids[k], "final"), edit[:, :, k].T)
    # the remedy the note gives works: the volume puts the slice back, the export then labels it
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz")
    import_dataset(proj, "nifti", tmp_path / "out")
    back = slice_ids(proj, "v")[1]
    np.testing.assert_array_equal(proj.best_mask(back)[0], edit[:, :, 1].T)


# ----------------------------------------------------------------------------- label volume geometry
def lps_affine() -> np.ndarray:
    a = np.diag([-1.5, -1.5, 8.0, 1.0])  # as from DICOM: x and y run to the right and front
    a[:3, 3] = [60.0, 45.0, -10.0]
    return a


def save_as(path: Path, data: np.ndarray, aff: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return path


def test_a_label_volume_in_another_orientation_is_reoriented_to_its_image(proj, tmp_path):
    save_as(tmp_path / "v.nii.gz", volume(), lps_affine())
    ras = nib.as_closest_canonical(nib.Nifti1Image(labels(), lps_affine()))  # x and y flipped, RAS affine
    save_as(tmp_path / "ras_gt.nii.gz", np.asanyarray(ras.dataobj), ras.affine)
    s = import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "ras_gt.nii.gz"))
    assert s.masks == 5
    assert "ras_gt.nii.gz is stored in RAS orientation, its image v.nii.gz in LPS: reoriented" in " ".join(s.notes)
    for k, iid in enumerate(slice_ids(proj, "v")):
        np.testing.assert_array_equal(proj.mask(iid, "imported"), labels()[:, :, k].T)
    # axes swapped (array axes 0 and 1, the affine's columns with them): the same grid, reoriented
    swapped = lps_affine()[:, [1, 0, 2, 3]]
    save_as(tmp_path / "w.nii.gz", volume(3), lps_affine())
    save_as(tmp_path / "sw_gt.nii.gz", np.ascontiguousarray(labels().transpose(1, 0, 2)), swapped)
    s = import_dataset(proj, "nifti", tmp_path / "w.nii.gz", masks=str(tmp_path / "sw_gt.nii.gz"))
    assert s.masks == 5 and "reoriented" in " ".join(s.notes)
    np.testing.assert_array_equal(proj.mask(slice_ids(proj, "w")[3], "imported"), labels()[:, :, 3].T)
    # no orientation at all (qform and sform codes 0): taken in the image's voxel order, with a note
    save_as(tmp_path / "x.nii.gz", volume(4), lps_affine())
    nib.save(nib.Nifti1Image(labels(), None), str(tmp_path / "plain_gt.nii.gz"))
    s = import_dataset(proj, "nifti", tmp_path / "x.nii.gz", masks=str(tmp_path / "plain_gt.nii.gz"))
    assert s.masks == 5 and "plain_gt.nii.gz has no orientation" in " ".join(s.notes)
    np.testing.assert_array_equal(proj.mask(slice_ids(proj, "x")[1], "imported"), labels()[:, :, 1].T)


def test_a_label_volume_on_another_grid_is_refused_naming_both_files(proj, tmp_path):
    save_as(tmp_path / "v.nii.gz", volume(), lps_affine())
    moved = lps_affine()
    moved[:3, 3] += [6.0, 0.0, 0.0]  # four voxels to the side
    save_as(tmp_path / "off_gt.nii.gz", labels(), moved)
    before = files_of(proj)
    with pytest.raises(AnnotationError) as e:
        import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "off_gt.nii.gz"))
    msg = str(e.value)
    assert msg.startswith("off_gt.nii.gz: its grid (affine") and "v.nii.gz" in msg and "\n" not in msg, msg
    assert proj.images() == [] and files_of(proj) == before


def test_an_export_resaved_in_another_orientation_goes_back_onto_its_slices(proj, tmp_path):
    save_as(tmp_path / "v.nii.gz", volume(), lps_affine())
    save_as(tmp_path / "v_gt.nii.gz", labels(), lps_affine())
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "v_gt.nii.gz"))
    export_project(proj, "nifti", tmp_path / "out")
    path = tmp_path / "out" / "labels" / "v.nii.gz"
    edit = labels()
    edit[2:6, 2:6, 1] = 2  # edited in another tool, which saves in RAS
    ras = nib.as_closest_canonical(nib.Nifti1Image(edit, lps_affine()))
    save_as(path, np.asanyarray(ras.dataobj), ras.affine)
    s = import_dataset(proj, "nifti", tmp_path / "out")
    assert s.masks == 1 and "reoriented" in " ".join(s.notes), s.lines()
    ids = slice_ids(proj, "v")
    np.testing.assert_array_equal(proj.mask(ids[1], "final"), edit[:, :, 1].T)
    assert proj.mask_info(ids[0], "final") is None  # unchanged once reoriented: skipped
    moved = ras.affine.copy()
    moved[:3, 3] += [0.0, 0.0, 8.0]  # one slice off
    save_as(path, np.asanyarray(ras.dataobj), moved)
    with pytest.raises(AnnotationError, match=r"^v.nii.gz: its grid \(affine.*'v' \(volumes/v.json\)"):
        import_dataset(proj, "nifti", tmp_path / "out")


# ----------------------------------------------------------------------------- voxel types, detection
def test_rgb_and_complex_volumes_are_refused_in_one_line(proj, tmp_path, capsys):
    from segmenter.cli import main

    rgb = np.zeros((20, 16, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((20, 16, 3), np.complex64), np.eye(4)), str(tmp_path / "cplx.nii.gz"))
    for name, what in [("rgb.nii.gz", "RGB"), ("cplx.nii.gz", "complex64")]:
        with pytest.raises(AnnotationError) as e:
            import_dataset(proj, "nifti", tmp_path / name)
        msg = str(e.value)
        assert msg.startswith(f"{name}: its voxels are of type {what}") and "\n" not in msg, msg
        assert main(["import", str(proj.root), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: its voxels are of type" in err and "Traceback" not in err
    assert proj.images() == []


def test_an_app_upload_goes_on_past_a_refused_volume(proj, tmp_path):
    from app import handlers

    rgb = np.zeros((20, 16, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "up1.nii.gz"))
    save(tmp_path / "up2.nii.gz", volume())
    msg = handlers.add_uploads(proj, [str(tmp_path / "up1.nii.gz"), str(tmp_path / "up2.nii.gz")],
                               ["rgb.nii.gz", "heart.nii.gz"])
    assert msg.startswith("Added 5 image(s).") and "rgb.nii.gz: its voxels are of type RGB" in msg, msg
    assert proj.image_sets() == ["heart"]


def test_an_app_upload_pairs_a_volume_with_its_label_volume(proj, tmp_path):
    from app import handlers

    save(tmp_path / "t1.nii.gz", volume())
    save(tmp_path / "t2.nii.gz", labels())
    msg = handlers.add_uploads(proj, [str(tmp_path / "t2.nii.gz"), str(tmp_path / "t1.nii.gz")],
                               ["patient001_frame01_gt.nii.gz", "patient001_frame01.nii.gz"])
    assert msg.startswith("Added 5 image(s).") and "label volume patient001_frame01_gt.nii.gz" in msg, msg
    assert proj.image_sets() == ["patient001_frame01"]
    for k, iid in enumerate(slice_ids(proj, "patient001_frame01")):
        np.testing.assert_array_equal(proj.mask(iid, "imported"), labels()[:, :, k].T)
    # a label volume alone: said so, no grey slices of it; with its image again: onto its slices
    msg = handlers.add_uploads(proj, [str(tmp_path / "t2.nii.gz")], ["case_seg.nii.gz"])
    assert msg.startswith("Added 0 image(s).") and "case_seg.nii.gz: named as the label volume of 'case'" in msg, msg
    save(tmp_path / "t3.nii.gz", volume(2))
    msg = handlers.add_uploads(proj, [str(tmp_path / "t3.nii.gz"), str(tmp_path / "t2.nii.gz")],
                               ["case.nii.gz", "case_seg.nii.gz"])
    assert msg.startswith("Added 5 image(s)."), msg
    assert proj.image_sets() == ["case", "patient001_frame01"] and len(proj.images()) == 10
    assert proj.mask(slice_ids(proj, "case")[2], "imported") is not None


def test_two_label_volumes_beside_one_image_are_refused(proj, tmp_path):
    save(tmp_path / "a.nii.gz", volume())
    save(tmp_path / "a_gt.nii.gz", labels())
    save(tmp_path / "a_seg.nii.gz", labels())
    with pytest.raises(AnnotationError, match=r"a_gt.nii.gz and a_seg.nii.gz are both named as the label volume of "
                                              r"a.nii.gz"):
        import_path(proj, tmp_path)
    assert proj.images() == []


def test_a_nifti_export_is_detected_as_a_folder_and_as_a_zip(proj, tmp_path):
    save(tmp_path / "v.nii.gz", volume())
    save(tmp_path / "v_gt.nii.gz", labels())
    import_dataset(proj, "nifti", tmp_path / "v.nii.gz", masks=str(tmp_path / "v_gt.nii.gz"))
    export_project(proj, "nifti", tmp_path / "out")
    export_project(proj, "nifti", tmp_path / "out.zip")
    for path in (tmp_path / "out", tmp_path / "out.zip"):
        s = import_path(proj, path)  # no --format nifti
        assert s.added == [] and "5 unchanged masks skipped" in " ".join(s.notes), s.lines()
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "manifest.json").write_text(json.dumps({"format": "coco"}))
    with pytest.raises(AnnotationError, match="coco was read as a 'coco' export .its manifest.json says so.: coco: no COCO"):
        import_path(proj, tmp_path / "coco")


def test_a_float_volume_with_inf_imports_without_a_warning(proj, tmp_path):
    import warnings

    v = volume().astype(np.float32) / 100  # a window narrower than 255: inf * 255 / (hi - lo) overflowed
    v[1, 1, :] = np.inf
    v[2, 2, :] = -np.inf
    v[3, 3, :] = np.nan
    save(tmp_path / "f.nii.gz", v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_dataset(proj, "nifti", tmp_path / "f.nii.gz")
    img = proj.load_image(slice_ids(proj, "f")[0])
    assert (img[1, 1], img[2, 2], img[3, 3]) == (255, 0, 0)
