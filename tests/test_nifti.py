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
