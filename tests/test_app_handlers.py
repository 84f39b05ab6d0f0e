"""The app's handlers without a browser: plain functions over arrays and the store."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from annotations.errors import AnnotationError, LabelMapError
from annotations.imageio import encode_image_png
from annotations.store import Project
from app import canvas, handlers, jobs
from conftest import make_disc_image

N_IMAGES = 4


@pytest.fixture
def project(tmp_path):
    p = Project.create(tmp_path / "proj", classes=["background", "object"])
    for i in range(N_IMAGES):
        img, _, _ = make_disc_image(64, seed=i)
        p.add_image(encode_image_png(img), name=f"disc{i}.png")
    yield p
    p.close()


@pytest.fixture
def token(project):
    return handlers.register_project(project)


def _scribbles(seed=0):
    return make_disc_image(64, seed=seed)[2]


# ------------------------------------------------------------------ canvas helpers
def test_a_class_name_in_the_delete_question_is_text_not_html(project):
    """A class named ``<b>…`` vanished from the delete question (Markdown rendered it as a tag)."""
    handlers.add_class(project, "<img src=x> a_b*", "#00ff00")
    handlers.add_class(project, "last", "#0000ff")
    name, question = handlers.delete_class_question(project, 2)
    assert name == "<img src=x> a_b*"
    assert "Really delete class **&lt;img src=x&gt; a\\_b\\*** (index 2)?" in question and "<img" not in question
    _, q1 = handlers.delete_class_question(project, 1)
    assert "(&lt;img src=x&gt; a\\_b\\*, last)" in q1


def test_rle_round_trip_and_validation():
    rng = np.random.default_rng(0)
    lab = np.full((17, 23), 255, np.uint8)
    lab[rng.random(lab.shape) < 0.2] = 1
    lab[:3, :5] = 0
    code = canvas.rle_encode(lab)
    assert len(code) % 2 == 0
    np.testing.assert_array_equal(canvas.rle_decode(code, lab.shape), lab)
    assert canvas.rle_decode(canvas.rle_encode(np.zeros((0, 0), np.uint8)), (0, 0)).shape == (0, 0)
    for bad in ([1, 2, 3], [1, 0], [300, 17 * 23], [0, 5], "xyz"):
        with pytest.raises(LabelMapError):
            canvas.rle_decode(bad, lab.shape)


def test_overlay_is_transparent_where_unlabelled_and_coloured_elsewhere():
    m = np.full((8, 8), 255, np.uint8)
    m[2:6, 2:6] = 1
    rgba = canvas.overlay_rgba(m, [(0, 0, 0), (230, 25, 75)], edges=False)
    assert rgba.shape == (8, 8, 4) and rgba.dtype == np.uint8
    assert (rgba[m == 255, 3] == 0).all()
    assert (rgba[m == 1] == (230, 25, 75, 255)).all()
    url = canvas.overlay_data_url(m, [(0, 0, 0), (230, 25, 75)])
    assert url.startswith("data:image/png;base64,")
    assert canvas.decode_data_url(url).shape == (8, 8, 4)


def test_image_data_url_png_small_jpeg_large():
    small = np.zeros((10, 10), np.uint8)
    assert canvas.image_data_url(small).startswith("data:image/png")
    big = np.zeros((600, 600, 3), np.uint8)
    assert canvas.image_data_url(big).startswith("data:image/jpeg")


# ------------------------------------------------------------------ saving strokes
def test_canvas_save_and_reload(project, token):
    iid = project.image_ids()[0]
    scr = _scribbles()
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    assert "error" not in r and r["version"] == 1 and r["labels"] is None
    np.testing.assert_array_equal(project.scribbles(iid), scr)
    msg = handlers.load_message(project, token, iid)
    assert msg["type"] == "load" and msg["version"] == 1 and msg["width"] == 64
    np.testing.assert_array_equal(canvas.rle_decode(msg["labels"], (64, 64)), scr)
    assert [c["name"] for c in msg["classes"]] == ["background", "object"]
    assert project.status(iid) == "scribbled"


def test_two_windows_never_lose_each_others_strokes(project, token):
    """Both windows start from version 0; the second save is merged, not refused or overwritten."""
    iid = project.image_ids()[0]
    a = np.full((64, 64), 255, np.uint8)
    a[5:8, 5:30] = 0
    b = np.full((64, 64), 255, np.uint8)
    b[30:33, 20:40] = 1
    ra = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(a), "version": 0})
    rb = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(b), "version": 0})
    assert ra["version"] == 1 and rb["version"] == 2 and rb["merged"]
    stored = project.scribbles(iid)
    assert (stored[5:8, 5:30] == 0).all() and (stored[30:33, 20:40] == 1).all()
    np.testing.assert_array_equal(canvas.rle_decode(rb["labels"], (64, 64)), stored)
    # window A now erases its own stroke from its (stale) version 1: B's stroke survives
    a2 = np.full((64, 64), 255, np.uint8)
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(a2), "version": 1})
    stored = project.scribbles(iid)
    assert r["version"] == 3 and (stored[5:8, 5:30] == 255).all() and (stored[30:33, 20:40] == 1).all()


def test_mask_editor_saves_final_and_merges(project, token):
    iid = project.image_ids()[1]
    start = handlers.canvas_mask_layer({"project": token, "image_id": iid})
    assert start["kind"] == "none" and start["labels"] is None
    m1 = np.zeros((64, 64), np.uint8)
    m1[10:20, 10:20] = 1
    r1 = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(m1),
                               "version": 0})
    assert "error" not in r1
    assert project.status(iid) == "final"
    assert project.mask_info(iid, "final").source.startswith("app:mask-editor")
    # a second window, still on the empty start, paints elsewhere: both edits are kept
    m2 = np.full((64, 64), 255, np.uint8)
    m2[40:50, 40:50] = 1
    r2 = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(m2),
                               "version": 0})
    assert r2["merged"]
    final = project.mask(iid, "final")
    assert (final[10:20, 10:20] == 1).all() and (final[40:50, 40:50] == 1).all()


def test_mask_editor_painted_back_to_its_start_takes_its_final_mask_back(project, token):
    """Mask editor on a predicted image: paint, then Undo (or Reset) back to the map it opened with.
    The image stayed 'final' with the unreviewed prediction stored as a hand edit. Now the final
    mask that visit saved is taken back (the status is 'predicted' again); a redo saves it again,
    and on an image that had a final mask before, the map is saved as usual."""
    iid, other = project.image_ids()[:2]
    gt = make_disc_image(64, seed=0)[1]
    project.save_mask(iid, gt, "predicted", source="model:test", uncertainty=0.2)
    start = handlers.canvas_mask_layer({"project": token, "image_id": iid, "shown": "predicted"})
    assert start["final_id"] == 0 and start["kind"] == "predicted"
    first = canvas.rle_decode(start["labels"], (64, 64)).copy()
    painted = first.copy()
    painted[:6, :6] = 1
    req = {"project": token, "image_id": iid, "layer": "mask", "kind": "predicted",
           "start_version": start["version"], "opened_final": start["final_id"]}
    r = handlers.canvas_save({**req, "labels": canvas.rle_encode(painted), "version": start["version"]})
    assert "error" not in r and project.status(iid) == "final"
    r = handlers.canvas_save({**req, "labels": canvas.rle_encode(first), "version": r["version"]})  # Undo
    assert r.get("taken_back") and r["version"] == start["version"] and r["final_id"] == 0
    assert project.mask_info(iid, "final") is None and project.status(iid) == "predicted"
    assert r["status"] == handlers.image_status(project, iid)
    r = handlers.canvas_save({**req, "labels": canvas.rle_encode(painted), "version": r["version"]})  # Redo
    assert not r.get("taken_back") and project.status(iid) == "final"
    np.testing.assert_array_equal(project.mask(iid, "final"), painted)
    assert project.mask_info(iid, "final").source == "app:mask-editor(from predicted)"
    # painted and undone before any save: nothing is saved at all
    project.save_mask(other, gt, "predicted", source="model:test", uncertainty=0.2)
    s2 = handlers.canvas_mask_layer({"project": token, "image_id": other, "shown": "predicted"})
    r = handlers.canvas_save({**req, "image_id": other, "labels": s2["labels"], "version": s2["version"],
                              "start_version": s2["version"], "opened_final": 0})
    assert r.get("taken_back") and project.mask_info(other, "final") is None
    # the image had a final mask when the editor opened: back to it is saved as usual
    s3 = handlers.canvas_mask_layer({"project": token, "image_id": iid})
    assert s3["final_id"] == s3["version"] > 0
    req3 = {**req, "kind": "final", "start_version": s3["version"], "opened_final": s3["final_id"]}
    more = painted.copy()
    more[50:, 50:] = 0
    r = handlers.canvas_save({**req3, "labels": canvas.rle_encode(more), "version": s3["version"]})
    r = handlers.canvas_save({**req3, "labels": canvas.rle_encode(painted), "version": r["version"]})
    assert not r.get("taken_back") and project.status(iid) == "final"
    np.testing.assert_array_equal(project.mask(iid, "final"), painted)
    # another window's final mask saved meanwhile is never taken back
    s4 = handlers.canvas_mask_layer({"project": token, "image_id": other, "shown": "predicted"})
    p4 = canvas.rle_decode(s4["labels"], (64, 64)).copy()
    p4[:3, :3] = 1
    req4 = {**req, "image_id": other, "start_version": s4["version"], "opened_final": 0}
    r = handlers.canvas_save({**req4, "labels": canvas.rle_encode(p4), "version": s4["version"]})
    theirs = handlers.canvas_mask_layer({"project": token, "image_id": other})
    t = canvas.rle_decode(theirs["labels"], (64, 64)).copy()
    t[60:, :4] = 1
    handlers.canvas_save({"project": token, "image_id": other, "layer": "mask", "labels": canvas.rle_encode(t),
                          "version": theirs["version"], "kind": "final"})
    r = handlers.canvas_save({**req4, "labels": s4["labels"], "version": r["version"]})
    assert not r.get("taken_back") and project.status(other) == "final"
    assert (project.mask(other, "final")[60:, :4] == 1).all()


def test_an_all_unlabelled_final_mask_is_refused_and_the_previous_one_stays(project, token):
    """The mask editor's Clear saved a final mask of 255 everywhere: the image counted as done,
    Predict skipped it and YOLO exported 'no object'. Now the save is refused with the reason, and
    the previous final mask (if any) stays; accepting an all-unlabelled mask is refused too."""
    iid, other = project.image_ids()[:2]
    empty = np.full((64, 64), 255, np.uint8)
    r = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(empty),
                              "version": 0, "kind": "none"})
    assert "unlabelled" in r["error"] and "still has no final mask" in r["error"]
    assert project.mask_info(iid, "final") is None and project.status(iid) == "untouched"
    gt = make_disc_image(64, seed=0)[1]
    project.save_mask(iid, gt, "predicted", source="model:test", uncertainty=0.2)
    start = handlers.canvas_mask_layer({"project": token, "image_id": iid, "shown": "predicted"})
    painted = canvas.rle_decode(start["labels"], (64, 64)).copy()
    painted[:4, :4] = 1
    r = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(painted),
                              "version": start["version"], "kind": "predicted"})
    assert "error" not in r
    kept = project.mask_info(iid, "final")
    r = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(empty),
                              "version": r["version"], "kind": "final"})
    assert "previous final mask" in r["error"] and "Undo" in r["error"]
    assert project.mask_info(iid, "final").id == kept.id
    np.testing.assert_array_equal(project.mask(iid, "final"), painted)
    project.save_mask(other, empty, "pseudo", source="tags:cam")
    r = handlers.canvas_accept({"project": token, "image_id": other, "kind": "pseudo", "final_id": 0})
    assert "not accepted" in r["error"] and project.mask_info(other, "final") is None


def test_accepting_a_preview_over_a_prediction_records_the_prediction(project, token):
    """The live preview corrects the prediction with the strokes; its accepted mask's provenance
    names that prediction and its model (it said 'hybrid' alone, with no model version)."""
    iid, plain = project.image_ids()[:2]
    _, gt, scr = make_disc_image(64, seed=0)
    project.save_mask(iid, gt, "predicted", source="model:unet/resnet18", model_version="app-unet-v7",
                      confidence=np.full((64, 64), 0.9, np.float32), uncertainty=0.2)
    project.save_scribbles(iid, scr)
    handlers.accept_final(project, iid, "preview", seen_final=0)
    mi = project.mask_info(iid, "final")
    assert mi.source == "app:accepted-preview(hybrid+predicted app-unet-v7)" and mi.model_version == "app-unet-v7"
    project.save_scribbles(plain, scr)  # no prediction: the strokes alone
    handlers.accept_final(project, plain, "preview", seen_final=0)
    mi = project.mask_info(plain, "final")
    assert mi.source == "app:accepted-preview(hybrid)" and mi.model_version is None


def test_strokes_after_mask_edits_correct_them_and_accept_keeps_them(project, token):
    """Hand-painted mask-editor edits, then one more stroke elsewhere: the live preview is the edited
    mask corrected near that stroke (not the strokes alone), so 'Accept as final' keeps the edits."""
    iid = project.image_ids()[0]
    _, gt, scr = make_disc_image(64, seed=0)
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    painted = handlers.preview_result(project, iid)[0].mask.copy()
    painted[48:58, 48:58] = 1  # a hand-painted square the strokes know nothing of, far from them
    handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(painted),
                          "version": 0})
    assert handlers.preview_prior(project, iid).kind == "final"
    more = scr.copy()
    more[20:22, 2:8] = 0  # another stroke, far from the square
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(more), "version": 1})
    assert (handlers.preview_result(project, iid)[0].mask[48:58, 48:58] == 1).all()
    handlers.accept_final(project, iid, "preview", seen_final=handlers.final_id(project, iid))
    assert (project.mask(iid, "final")[48:58, 48:58] == 1).all()
    # a later prediction is the newest: the strokes correct it again
    project.save_mask(iid, gt, "predicted", source="t", confidence=np.full((64, 64), 0.9, np.float32))
    assert handlers.preview_prior(project, iid).kind == "predicted"


def test_the_mask_editor_starts_from_the_overlay_shown(project, token):
    iid = project.image_ids()[0]
    _, gt, scr = make_disc_image(64, seed=0)
    wrong = np.zeros((64, 64), np.uint8)  # a prediction that missed the disc
    project.save_mask(iid, wrong, "predicted", source="t", confidence=np.full((64, 64), 0.6, np.float32))
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    shown = handlers.canvas_mask_layer({"project": token, "image_id": iid, "shown": "preview"})
    preview = handlers.preview_result(project, iid)[0].mask
    assert shown["kind"] == "preview" and shown["version"] < 0
    assert np.array_equal(canvas.rle_decode(shown["labels"], (64, 64)), preview) and (preview == 1).any()
    # the prediction as its overlay shows it: corrected by the strokes drawn after it, as an export writes it
    pred = handlers.canvas_mask_layer({"project": token, "image_id": iid, "shown": "predicted"})
    as_shown = handlers.shown_mask(project, iid, "predicted")[0]
    assert pred["kind"] == "predicted" and pred["version"] < 0
    assert np.array_equal(canvas.rle_decode(pred["labels"], (64, 64)), as_shown) and (as_shown == 1).any()


def test_two_windows_on_one_final_mask_keep_each_others_work(project, token):
    """B paints in the mask editor from the live preview while A accepts a preview as final: B's save
    changes only B's pixels (it replaced all of A's mask, its start counted as blank), and A's later
    Accept of a stale page is refused (it silently replaced B's edit)."""
    iid = project.image_ids()[2]
    project.save_scribbles(iid, _scribbles(2))
    b_start = handlers.canvas_mask_layer({"project": token, "image_id": iid})
    assert b_start["kind"] == "preview" and b_start["version"] < 0
    seen_by_a = handlers.load_message(project, token, iid)["final_id"]
    assert seen_by_a == 0
    # A: more strokes, then accepts the preview
    more = _scribbles(2).copy()
    more[50:54, 5:60] = 1
    project.save_scribbles(iid, more, expected_version=project.scribble_version(iid))
    r = handlers.canvas_accept({"project": token, "image_id": iid, "kind": "preview", "final_id": seen_by_a})
    assert "error" not in r and r["final_id"] > 0
    a_final = project.mask(iid, "final").copy()
    # B paints one small patch on the preview it started from
    b = canvas.rle_decode(b_start["labels"], (64, 64)).copy()
    b[0:3, 0:3] = 1 - b[0, 0] if b[0, 0] in (0, 1) else 1
    r = handlers.canvas_save({"project": token, "image_id": iid, "layer": "mask", "labels": canvas.rle_encode(b),
                              "version": b_start["version"], "kind": "preview"})
    assert "error" not in r and r["merged"]
    final = project.mask(iid, "final")
    changed = final != a_final
    assert changed.sum() == 9 and changed[0:3, 0:3].all()
    # A, still showing the first final mask, accepts again: refused, B's edit stays
    r = handlers.canvas_accept({"project": token, "image_id": iid, "kind": "preview", "final_id": seen_by_a})
    assert "someone saved a final mask" in r["error"]
    assert (project.mask(iid, "final") == final).all()
    # ... and the page is told which final mask is there now (it was refused in a loop, bug hunt 47 #5)
    assert r["refresh"]["final_id"] == handlers.final_id(project, iid) and "final" in r["refresh"]["overlay_kinds"]


def test_a_missing_image_file_is_said_and_does_not_block(project, token, tmp_path):
    ids = project.image_ids()
    (project.root / project.image_info(ids[1]).file).unlink()
    msg = handlers.load_message(project, token, ids[1])
    assert msg["type"] == "empty" and "image file" in msg["message"] and "missing" in msg["message"]
    assert handlers.resolve_navigation(project, ids[1], "next").image_id == ids[2]
    with pytest.raises(AnnotationError, match="missing from its folder: disc1.png"):
        handlers.export_zip(project, "folder", "best")


def test_errors_come_back_as_messages_not_exceptions(project, token):
    iid = project.image_ids()[0]
    cases = [
        {"project": "nope", "image_id": iid, "labels": [], "version": 0},
        {"project": token, "image_id": 999, "labels": [], "version": 0},
        {"project": token, "image_id": iid, "labels": [7, 64 * 64], "version": 0},  # class 7 does not exist
        {"project": token, "image_id": iid, "labels": [1, 5], "version": 0},  # wrong pixel count
        {"project": token, "image_id": iid, "labels": [255, 64 * 64], "layer": "bogus"},
        {"project": token, "image_id": "x"},
        "not a dict",
    ]
    for payload in cases:
        r = handlers.canvas_save(payload)
        assert isinstance(r.get("error"), str) and r["error"] and "Traceback" not in r["error"], payload
    assert project.scribble_version(iid) == 0
    assert "error" in handlers.canvas_preview({"project": token, "image_id": iid, "kind": "bogus"})


def test_one_windows_undo_saved_as_an_edit_leaves_the_others_strokes(project, token):
    """The page undoes its own stroke by saving its map without it, on the version it last saw:
    the merge takes that stroke out of the stored head and keeps what another window drew since."""
    iid = project.image_ids()[0]
    blank = np.full((64, 64), 255, np.uint8)
    a = blank.copy()
    a[5, 5:20] = 1
    ra = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(a), "version": 0})
    b = blank.copy()
    b[40, 5:20] = 0
    rb = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(b), "version": 0})
    assert rb["merged"] and rb["version"] == 2
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(blank),
                              "version": ra["version"]})  # window A's undo of its stroke
    head = project.scribbles(iid)
    assert r["version"] == 3 and (head[5, 5:20] == 255).all() and (head[40, 5:20] == 0).all()
    np.testing.assert_array_equal(canvas.rle_decode(r["labels"], (64, 64)), head)  # A's page gets B's stroke


def test_an_undo_from_a_stale_page_keeps_the_pixels_another_window_drew_over_its_stroke(project, token):
    """A three-way merge: window A's change (here its undo) lands only where A changed a pixel and
    nobody changed it since; where B drew across A's stroke, B's pixels stay (bug hunt 39, #3)."""
    iid = project.image_ids()[0]
    blank = np.full((64, 64), 255, np.uint8)
    a = blank.copy()
    a[30:34, 5:60] = 1  # A: a horizontal stroke
    ra = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(a), "version": 0})
    b = a.copy()
    b[5:60, 30:34] = 0  # B (it has A's stroke): a vertical stroke across it
    rb = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(b),
                               "version": ra["version"]})
    assert not rb["merged"]
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(blank),
                              "version": ra["version"]})  # A, not saved since, undoes its stroke
    head = project.scribbles(iid)
    assert (head[5:60, 30:34] == 0).all(), "B's pixels where the strokes cross were erased"
    assert (head[30:34, 5:30] == 255).all() and (head[30:34, 34:60] == 255).all()  # A's stroke is gone
    # an eraser stroke from a stale page leaves what another window drew since, too
    e = blank.copy()
    r2 = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(e),
                               "version": ra["version"]})
    assert "error" not in r2 and (project.scribbles(iid)[5:60, 30:34] == 0).all()
    assert r["version"] >= 3

def test_a_class_renamed_elsewhere_moves_no_number_so_the_page_goes_on(tmp_path):
    """A class renamed on the command line or in another tab: the page's saves were refused as from
    a stale class list (and its reload dropped the renamed class's strokes); Accept then stored a
    final mask without them; "Others absent" tagged a class added since that the page never showed
    (bug hunt 47, #1, #2, #6). The class epoch (changed by a delete, not by a rename or an add)
    tells a rename from a delete."""
    p = Project.create(tmp_path / "p", classes=["background", "horse"])
    iid = p.add_image(encode_image_png(make_disc_image(64, seed=0)[0]), name="a.png").id
    tok = handlers.register_project(p)
    epoch = p.class_epoch
    page = {"project": tok, "image_id": iid, "n_classes": 2, "class_names": ["background", "horse"],
            "class_epoch": epoch}
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 1
    scr[40:45, 5:20] = 0
    handlers.rename_class(p, "horse", "pony")
    handlers.add_class(p, "rider")
    assert p.class_epoch == epoch  # neither moved a number
    r = handlers.canvas_save({**page, "labels": canvas.rle_encode(scr), "version": 0})
    assert "error" not in r, r
    np.testing.assert_array_equal(p.scribbles(iid), scr)
    r = handlers.canvas_tag({**page, "others": "absent"})
    assert "error" not in r and p.tags(iid) == {}  # rider: added after the page loaded, never shown there
    r = handlers.canvas_accept({**page, "kind": "preview", "final_id": 0})
    assert "error" not in r and p.mask_info(iid, "final") is not None
    handlers.delete_class(p, "rider")  # a delete moves numbers: the old epoch is refused again ...
    assert p.class_epoch != epoch
    r = handlers.canvas_save({**page, "labels": canvas.rle_encode(scr), "version": p.scribble_version(iid)})
    assert "the classes were changed in another window" in r["error"]
    assert "(a class was deleted or the classes replaced, which moves class numbers; this page has" in r["error"]
    r = handlers.canvas_accept({**page, "kind": "preview", "final_id": handlers.final_id(p, iid)})
    assert "nothing was accepted" in r["error"]
    fresh = {**page, "class_names": p.class_names, "class_epoch": p.class_epoch}  # ... a reloaded page goes on
    assert "error" not in handlers.canvas_save({**fresh, "labels": canvas.rle_encode(scr),
                                                "version": p.scribble_version(iid)})
    p.close()



def test_a_page_with_a_stale_class_list_of_the_same_length_is_refused(project, token):
    """Class 'c' added and 'a' deleted elsewhere: the count is the same, the numbers are not. A save,
    a mask edit or a tag from the page that knows the old classes is refused (nothing stored);
    Rename / Recolour / Delete act by the name picked, never on the class now at that index
    (bug hunt 39, #2 and #5). A page that only lacks a class added since still saves."""
    iid = project.image_ids()[0]
    handlers.add_class(project, "a")  # background, object, a
    old = ["background", "object", "a"]
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 2  # a
    scr[30:35, 5:20] = 1  # object
    project.save_scribbles(iid, scr)
    handlers.add_class(project, "b")
    # a page that loaded before "b" was added: still fine
    page = {"project": token, "image_id": iid, "n_classes": 3, "class_names": old,
            "labels": canvas.rle_encode(scr), "version": project.scribble_version(iid)}
    assert "error" not in handlers.canvas_save(page)
    handlers.delete_class(project, "object")  # now background, a, b: 3 classes again
    assert project.class_names == ["background", "a", "b"]
    before, version = project.scribbles(iid).copy(), project.scribble_version(iid)
    drawn = scr.copy()
    drawn[50:55, 5:20] = 2  # the page's "a"
    r = handlers.canvas_save({**page, "labels": canvas.rle_encode(drawn)})
    assert "the classes were changed in another window" in r["error"] and "kept in this page" in r["error"]
    assert project.scribble_version(iid) == version
    np.testing.assert_array_equal(project.scribbles(iid), before)
    r = handlers.canvas_save({**page, "layer": "mask", "labels": canvas.rle_encode(drawn), "version": 0})
    assert "error" in r and project.mask_info(iid, "final") is None
    r = handlers.canvas_tag({"project": token, "image_id": iid, "n_classes": 3, "class_names": old,
                             "class_idx": 2, "state": "absent"})
    assert "the tag was not saved" in r["error"] and project.tags(iid) == {}
    r = handlers.canvas_tag({"project": token, "image_id": iid, "n_classes": 3, "class_names": old,
                             "others": "absent"})
    assert "error" in r and project.tags(iid) == {}
    ok = handlers.canvas_tag({"project": token, "image_id": iid, "n_classes": 3,
                              "class_names": project.class_names, "class_idx": 2, "state": "present"})
    assert "error" not in ok and project.tags(iid) == {2: "present"}
    # the "Class to change" list is valued by name
    assert handlers.class_choices(project) == [("0: background", "background"), ("1: a", "a"), ("2: b", "b")]
    with pytest.raises(AnnotationError, match="no class 'object' any more"):
        handlers.rename_class(project, "object", "bee")  # the stale page's pick
    with pytest.raises(AnnotationError, match="no class 'object' any more"):
        handlers.recolor_class(project, "object", "#00ff00")
    with pytest.raises(AnnotationError, match="no class 'object' any more"):
        handlers.delete_class_question(project, "object")
    assert project.class_names == ["background", "a", "b"]
    assert "is now called bee" in handlers.rename_class(project, "b", "bee")
    assert project.class_names == ["background", "a", "bee"]


def test_a_restarted_server_takes_the_page_of_its_project_back(project, tmp_path, monkeypatch):
    """Tokens live in the server's memory: after a restart the page's token is unknown. A page that
    names the folder of a project the server has open (the one it was started on) gets its strokes
    saved, merged with what was stored meanwhile; a page naming another folder gets nothing (bug
    hunt 39, #1)."""
    monkeypatch.setattr(handlers, "_PROJECTS", {})
    iid = project.image_ids()[0]
    handlers.register_project(project)  # what the restarted server's build_ui does
    stale = "0123456789abcdef"  # the token of the server before the restart
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 1
    r = handlers.canvas_save({"project": stale, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    assert "not open on the server" in r["error"] and project.scribble_version(iid) == 0
    other = Project.create(tmp_path / "other", classes=["background", "object"])
    img, _, _ = make_disc_image(64, seed=9)
    other.add_image(encode_image_png(img), name="x.png")
    r = handlers.canvas_save({"project": stale, "root": str(other.root), "image_id": iid,
                              "labels": canvas.rle_encode(scr), "version": 0})
    assert "not open on the server" in r["error"] and other.scribble_version(iid) == 0
    other.close()
    r = handlers.canvas_save({"project": stale, "root": str(project.root), "image_id": iid,
                              "labels": canvas.rle_encode(scr), "version": 0})
    assert "error" not in r and (project.scribbles(iid)[5:10, 5:20] == 1).all()
    assert handlers.project_for(stale) is project
    msg = handlers.load_message(project, handlers.register_project(project), iid)
    assert msg["root"] == str(project.root)


def test_a_stroke_of_a_class_tagged_absent_turns_its_tag_to_present(project, token):
    """A class with strokes on the image is not tagged absent: a stroke drawn after "Others absent"
    turns that tag to present, and the page is told (bug hunt 39, #4)."""
    iid = project.image_ids()[0]
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 0
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    handlers.canvas_tag({"project": token, "image_id": iid, "others": "absent"})
    assert project.tags(iid) == {1: "absent"}
    scr[30:35, 5:20] = 1
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr),
                              "version": r["version"]})
    assert "error" not in r and project.tags(iid) == {1: "present"} and r["tags"] == {"1": "present"}
    assert "object was tagged absent on this image" in r["note"] and "now present" in r["note"]
    scr[40:45, 5:20] = 1
    r = handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr),
                              "version": r["version"]})
    assert r["note"] == ""


def test_next_unannotated_on_the_last_unannotated_image_says_so(project):
    """It said "Every image has annotations already." on the one image left without any (bug hunt 39, #10)."""
    ids = project.image_ids()
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 1
    for i in ids[:-1]:
        project.save_scribbles(i, scr)
    r = handlers.resolve_navigation(project, ids[-1], "unannotated")
    assert r.image_id == ids[-1] and r.message == "This is the only image left without annotations."
    project.save_scribbles(ids[-1], scr)
    assert handlers.resolve_navigation(project, ids[-1], "unannotated").message == "Every image has annotations already."


def test_tags(project, token):
    iid = project.image_ids()[2]
    r = handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "present"})
    assert r["tags"] == {"1": "present"} and r["status"] == "tagged"
    r = handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 0, "state": "absent"})
    assert r["tags"] == {"0": "absent", "1": "present"}
    r = handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "unknown"})
    assert r["tags"] == {"0": "absent"}
    assert "error" in handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "maybe"})
    assert "error" in handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 9, "state": "present"})


# ------------------------------------------------------------------ preview, review
def test_others_absent_tags_every_class_not_tagged_or_drawn(tmp_path):
    p = Project.create(tmp_path / "p", classes=["bg", "car", "tree", "road"])
    img, _, _ = make_disc_image(64, seed=0)
    iid = p.add_image(encode_image_png(img), name="a.png").id
    tok = handlers.register_project(p)
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:8, 5:20] = 2  # a tree stroke: drawn, so not absent
    p.save_scribbles(iid, scr)
    handlers.canvas_tag({"project": tok, "image_id": iid, "class_idx": 1, "state": "present"})
    r = handlers.canvas_tag({"project": tok, "image_id": iid, "others": "absent"})
    # "bg" is a background (a region of every image): never tagged absent, or predict labels every
    # pixel of the image a foreground class
    assert r["tags"] == {"1": "present", "3": "absent"}
    assert p.tags(iid) == {1: "present", 3: "absent"}
    p.close()


def test_others_absent_spares_a_class_with_strokes_in_another_layer(tmp_path):
    """'Others absent' looked at the app's layer only, while a single 'absent' click is refused for
    strokes in any layer (they would be dropped by predict): both now count every layer."""
    p = Project.create(tmp_path / "p", classes=["bg", "car", "tree", "road"])
    iid = p.add_image(encode_image_png(make_disc_image(64, seed=0)[0]), name="a.png").id
    tok = handlers.register_project(p)
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:8, 5:20] = 2  # a tree stroke in an imported layer, not the app's
    p.save_scribbles(iid, scr, layer="real")
    handlers.canvas_tag({"project": tok, "image_id": iid, "class_idx": 1, "state": "present"})
    r = handlers.canvas_tag({"project": tok, "image_id": iid, "others": "absent"})
    assert r["tags"] == {"1": "present", "3": "absent"}
    p.close()


def test_others_absent_tags_a_class_0_that_is_not_a_background(tmp_path):
    p = Project.create(tmp_path / "p", classes=["Sky", "Car", "Road"])
    iid = p.add_image(encode_image_png(make_disc_image(64, seed=0)[0]), name="a.png").id
    tok = handlers.register_project(p)
    handlers.canvas_tag({"project": tok, "image_id": iid, "class_idx": 1, "state": "present"})
    r = handlers.canvas_tag({"project": tok, "image_id": iid, "others": "absent"})
    assert r["tags"] == {"0": "absent", "1": "present", "2": "absent"}
    p.close()


def test_a_class_with_strokes_on_the_image_is_not_tagged_absent(project, token):
    iid = project.image_ids()[0]
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:8, 5:20] = 1  # 45 object pixels
    scr[50:52, 5:10] = 0
    project.save_scribbles(iid, scr)
    r = handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "absent"})
    assert r["error"] == "object has 45 stroke pixels on this image: erase them first, or tag it present."
    r = handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 0, "state": "absent"})
    assert "background has 10 stroke pixels on this image" in r["error"]
    assert project.tags(iid) == {}
    assert handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "present"})["tags"] == {
        "1": "present"}
    # strokes of another scribble layer (an imported dataset's) count too, and the layer is named
    other = project.image_ids()[1]
    project.save_scribbles(other, scr, layer="real")
    r = handlers.canvas_tag({"project": token, "image_id": other, "class_idx": 1, "state": "absent"})
    assert r["error"].startswith("object has 45 stroke pixels on this image (45 in scribble layer 'real'): ")
    project.save_scribbles(other, scr)  # and in the app's layer too
    r = handlers.canvas_tag({"project": token, "image_id": other, "class_idx": 1, "state": "absent"})
    assert r["error"].startswith("object has 90 stroke pixels on this image (45 in scribble layer 'real'): ")
    assert project.tags(other) == {}
    # once the strokes are erased, the tag is taken
    project.save_scribbles(iid, np.where(scr == 1, 255, scr).astype(np.uint8))
    assert handlers.canvas_tag({"project": token, "image_id": iid, "class_idx": 1, "state": "absent"})["tags"] == {
        "1": "absent"}


def test_the_tag_command_refuses_absent_for_a_class_with_strokes(project, capsys):
    from segmenter.cli import main

    ids = project.image_ids()
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:8, 5:20] = 1
    project.save_scribbles(ids[1], scr)
    root = str(project.root)
    assert main(["tag", root, "--all", "--absent", "object"]) == 2
    err = capsys.readouterr().err
    assert "object has 45 stroke pixels on disc1.png: erase them first, or tag it present." in err, err
    assert err.startswith("error: nothing was tagged: ")
    assert all(project.tags(i) == {} for i in ids)
    assert main(["tag", root, "disc0.png", "disc2.png", "--absent", "object"]) == 0
    assert project.tags(ids[0]) == {1: "absent"} and project.tags(ids[1]) == {}


def test_preview_overlay_follows_the_scribbles(project, token):
    iid = project.image_ids()[0]
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview"})
    assert r["overlay"] is None and "Draw" in r["message"]
    img, gt, scr = make_disc_image(64, seed=0)
    # the page sends its strokes with the request: no need to wait for their save
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview", "labels": canvas.rle_encode(scr)})
    assert r["overlay"].startswith("data:image/png") and r["version"] == 0
    from_page = r["overlay"]
    bad = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview", "labels": [9, 64 * 64]})
    assert "class index 9" in bad["error"]
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview"})
    assert r["overlay"] == from_page and r["version"] == 1
    rgba = canvas.decode_data_url(r["overlay"])
    colors = np.array([c.color for c in project.classes()])
    inside = rgba[gt == 1][:, :3]
    # most of the disc is drawn in the object's colour (edges are white)
    assert (np.abs(inside.astype(int) - colors[1]).sum(1) == 0).mean() > 0.7


@pytest.mark.parametrize("first, painted", [("background", False), ("Sky", True)])
def test_the_mask_overlays_leave_a_background_class_0_unpainted(tmp_path, first, painted):
    p = Project.create(tmp_path / "p", classes=[first, "object"])
    img, gt, scr = make_disc_image(64, seed=0)
    iid = p.add_image(encode_image_png(img), name="a.png").id
    tok = handlers.register_project(p)
    p.save_scribbles(iid, scr)
    pred = gt.copy()
    pred[:4] = 255  # unlabelled
    bg_color = np.array(p.classes()[0].color)
    for kind in ("preview", "predicted"):
        if kind == "predicted":
            p.save_mask(iid, pred, "predicted", source="t", uncertainty=0.1)
        rgba = canvas.decode_data_url(handlers.canvas_preview({"project": tok, "image_id": iid, "kind": kind})["overlay"])
        in_bg_color = (rgba[..., 3] > 0) & (rgba[..., :3] == bg_color).all(-1)
        assert in_bg_color[gt == 0].mean() > 0.8 if painted else not in_bg_color.any(), kind
        assert (rgba[gt == 1, 3] == 255).mean() > 0.9, kind  # the object is painted either way
    assert (rgba[:3, :, 3] == 0).all()  # unlabelled (row 3 borders the background: white)
    # the strokes (the page draws them in the class colours) and the mask editor still have its colour
    assert handlers.class_list(p)[0]["color"] == p.classes()[0].hex
    p.close()


def test_preview_corrects_the_prediction(project, token, monkeypatch):
    iid = project.image_ids()[0]
    _, gt, scr = make_disc_image(64, seed=0)
    conf = np.full((64, 64), 0.8, np.float32)
    project.save_mask(iid, gt, "predicted", source="test", confidence=conf, uncertainty=0.3)
    from segmenter.preview import prediction_prior

    prior = prediction_prior(project.mask(iid, "predicted"), project.confidence(iid, "predicted"), 2)
    assert prior.shape == (2, 64, 64) and prior.dtype == np.float32
    np.testing.assert_allclose(prior.sum(0), 1.0, atol=1e-5)
    assert np.allclose(prior[1][gt == 1], 0.8) and np.allclose(prior[0][gt == 1], 0.2)
    seen = {}
    real = handlers.preview_function()

    def spy(image, scribbles, num_classes, method=None, prior=None, colors=None, alpha=0.5, prediction=None,
            prediction_confidence=None, max_side=None, background=0):
        seen["prediction"], seen["confidence"] = prediction, prediction_confidence
        return real(image, scribbles, num_classes, method=method, prior=prior, colors=colors,
                    prediction=prediction, prediction_confidence=prediction_confidence, max_side=max_side,
                    background=background)

    monkeypatch.setattr(handlers, "preview_function", lambda: spy)
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview"})
    assert r["overlay"] and np.array_equal(seen["prediction"], gt)
    np.testing.assert_allclose(seen["confidence"], conf)
    # a new prediction (same scribbles) is corrected anew: the cached preview is not reused
    project.save_mask(iid, 1 - gt, "predicted", source="test", confidence=conf, uncertainty=0.3)
    handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview"})
    assert np.array_equal(seen["prediction"], 1 - gt)


def test_a_correction_stroke_keeps_the_predicted_classes_nobody_drew(tmp_path):
    """Three classes predicted; the person draws one stroke of class 1 only. The preview (and so
    'Accept as final') keeps class 2's predicted region instead of dropping the class."""
    p = Project.create(tmp_path / "p", classes=["bg", "a", "b"])
    img = np.full((64, 64, 3), 40, np.uint8)
    img[10:30, 10:30] = 200
    img[35:60, 35:60] = 120
    iid = p.add_image(encode_image_png(img), name="x.png").id
    pred = np.zeros((64, 64), np.uint8)
    pred[10:30, 10:30] = 1
    pred[35:60, 35:60] = 2
    p.save_mask(iid, pred, "predicted", source="model:test", model_version="v1", uncertainty=0.2)
    scr = np.full((64, 64), 255, np.uint8)
    scr[15:18, 12:28] = 1
    p.save_scribbles(iid, scr)
    result, _ = handlers.preview_result(p, iid)
    assert (result.mask == pred).mean() > 0.99 and (result.mask == 2).sum() > 500
    assert "final" in handlers.accept_final(p, iid, "preview")
    assert (p.mask(iid, "final") == 2).sum() > 500


def test_warm_up_runs_the_preview(monkeypatch):
    calls = []
    monkeypatch.setattr(handlers, "preview_function", lambda: lambda *a, **k: calls.append(a[2]))
    assert handlers.warm_up() >= 0 and calls == [2]


def test_overlay_of_stored_kinds_and_accept_final(project, token):
    iid = project.image_ids()[0]
    _, gt, scr = make_disc_image(64, seed=0)
    assert handlers.canvas_preview({"project": token, "image_id": iid, "kind": "predicted"})["overlay"] is None
    project.save_mask(iid, gt, "predicted", source="model:test", model_version="v1", uncertainty=0.25)
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "predicted"})
    assert r["overlay"] and "0.250" in r["message"]
    r = handlers.canvas_accept({"project": token, "image_id": iid, "kind": "predicted"})
    assert "final" in r["message"] and r["status"] == "final"
    np.testing.assert_array_equal(project.mask(iid, "final"), gt)
    assert project.mask_info(iid, "final").model_version == "v1"
    # accepting the live preview of another image
    j = project.image_ids()[1]
    assert "error" in handlers.canvas_accept({"project": token, "image_id": j, "kind": "preview"})
    handlers.canvas_save({"project": token, "image_id": j, "labels": canvas.rle_encode(scr), "version": 0})
    r = handlers.canvas_accept({"project": token, "image_id": j, "kind": "preview"})
    assert r["status"] == "final" and project.mask_info(j, "final").source.startswith("app:accepted-preview")
    # the mask editor starts from the final mask
    start = handlers.canvas_mask_layer({"project": token, "image_id": iid})
    assert start["kind"] == "final"
    np.testing.assert_array_equal(canvas.rle_decode(start["labels"], (64, 64)), gt)


def test_a_prediction_older_than_the_strokes_is_shown_as_the_export_writes_it(tmp_path):
    """A prediction made before strokes that contradict it: its overlay (and the mask editor's start,
    and Accept) is the prediction corrected by those strokes, the very mask an export writes, not
    the raw prediction; a prediction that newer strokes agree with is shown as stored."""
    import time

    from annotations.formats import ExportOptions
    from annotations.formats._common import export_mask

    p = Project.create(tmp_path / "p", ["background", "obj"])
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200  # obj is the bright right half
    ids = [p.add_image(encode_image_png(img + k), name=f"{n}.png").id for k, n in enumerate("ab")]
    pred = np.zeros((20, 30), np.uint8)  # the model missed obj
    for i in ids:
        p.save_mask(i, pred, "predicted", source="model:test", confidence=np.full((20, 30), 0.6, np.float32),
                    uncertainty=0.4)
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 20:26] = 1  # drawn after the prediction, against it
    p.save_scribbles(ids[0], scr)
    same = np.full((20, 30), 255, np.uint8)
    same[2:4, 2:6] = 0  # agrees with the prediction
    p.save_scribbles(ids[1], same)
    tok = handlers.register_project(p)
    colors = handlers.overlay_colors(p)

    def exported(i):
        return export_mask(p, p.image_info(i), ExportOptions(masks="best"))[0]

    a = exported(ids[0])
    assert (a[8:12, 20:26] == 1).all() and not np.array_equal(a, pred)
    r = handlers.canvas_preview({"project": tok, "image_id": ids[0], "kind": "predicted"})
    assert r["overlay"] == canvas.overlay_data_url(a, colors), "the overlay shows the raw stale prediction"
    assert "corrected by the strokes drawn since" in r["message"] and "0.400" in r["message"]
    start = handlers.canvas_mask_layer({"project": tok, "image_id": ids[0], "shown": "predicted"})
    assert start["kind"] == "predicted" and np.array_equal(canvas.rle_decode(start["labels"], (20, 30)), a)
    # the newer strokes agree: shown as stored, nothing said
    r = handlers.canvas_preview({"project": tok, "image_id": ids[1], "kind": "predicted"})
    assert r["overlay"] == canvas.overlay_data_url(pred, colors) and "corrected" not in r["message"]
    np.testing.assert_array_equal(exported(ids[1]), pred)
    # Accept keeps what was shown; the stored prediction is left as it is
    r = handlers.canvas_accept({"project": tok, "image_id": ids[0], "kind": "predicted", "final_id": 0})
    assert r["status"] == "final" and "corrected" in r["message"]
    np.testing.assert_array_equal(p.mask(ids[0], "final"), a)
    assert p.mask_info(ids[0], "final").source.startswith("app:accepted(predicted:model:test")
    np.testing.assert_array_equal(p.mask(ids[0], "predicted"), pred)
    p.close()


def test_a_final_mask_older_than_the_strokes_is_shown_and_accepted_as_the_export_writes_it(tmp_path):
    """Strokes drawn after Accept that contradict the final mask: the 'final' overlay shows it
    corrected by them (the mask an export writes), with a note, and Accept on it stores that as the
    new final mask (it used to answer 'already final' and keep the contradicted one)."""
    import time

    from annotations.formats import ExportOptions
    from annotations.formats._common import export_mask

    p = Project.create(tmp_path / "p", ["background", "obj"])
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200
    i = p.add_image(encode_image_png(img), name="a.png").id
    final = np.zeros((20, 30), np.uint8)
    final[:, 15:] = 1
    p.save_mask(i, final, "final", source="review")
    time.sleep(0.01)
    scr = np.full((20, 30), 255, np.uint8)
    scr[8:12, 3:9] = 1  # after Accept: obj where the final says background
    p.save_scribbles(i, scr)
    tok = handlers.register_project(p)
    colors = handlers.overlay_colors(p)
    want = export_mask(p, p.image_info(i), ExportOptions(masks="final"))[0]
    assert (want[8:12, 3:9] == 1).all()
    r = handlers.canvas_preview({"project": tok, "image_id": i, "kind": "final"})
    assert r["overlay"] == canvas.overlay_data_url(want, colors), "the overlay shows the contradicted final mask"
    assert "corrected by the strokes drawn since" in r["message"]
    assert handlers.image_status(p, i) == "final · newer strokes"
    assert handlers.image_rows(p)[0][2] == "final · newer strokes"
    fid = p.mask_info(i, "final").id
    r = handlers.canvas_accept({"project": tok, "image_id": i, "kind": "final", "final_id": fid})
    assert "corrected" in r["message"] and r["final_id"] != fid
    np.testing.assert_array_equal(p.mask(i, "final"), want)
    assert p.finals_older_than_strokes() == [] and handlers.image_status(p, i) == "final"
    r = handlers.canvas_accept({"project": tok, "image_id": i, "kind": "final", "final_id": r["final_id"]})
    assert r["message"] == "This mask is already final."
    p.close()


def test_a_mask_showing_a_class_tagged_absent_since_is_shown_and_accepted_without_it(tmp_path):
    """A prediction of 'obj' on the right half, then the reviewer tags obj absent: the overlay kept
    showing obj and Accept stored it, while the export wrote it without obj (a hunt shipped a 93 %
    Car mask beside tags.json saying Car absent). Now the overlay and Accept show what the export
    writes, with a note."""
    from annotations.formats import ExportOptions
    from annotations.formats._common import export_mask

    p = Project.create(tmp_path / "p", ["background", "obj", "other"])
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 200
    i = p.add_image(encode_image_png(img), name="a.png").id
    pred = np.zeros((20, 30), np.uint8)
    pred[:, 15:] = 1
    p.save_mask(i, pred, "predicted", source="model:test", confidence=np.full((20, 30), 0.9, np.float32))
    p.set_tag(i, 1, "absent")
    tok = handlers.register_project(p)
    want = export_mask(p, p.image_info(i), ExportOptions(masks="best"))[0]
    assert not (want == 1).any()
    r = handlers.canvas_preview({"project": tok, "image_id": i, "kind": "predicted"})
    assert r["overlay"] == canvas.overlay_data_url(want, handlers.overlay_colors(p))
    assert "without the classes tagged absent since" in r["message"]
    r = handlers.canvas_accept({"project": tok, "image_id": i, "kind": "predicted", "final_id": 0})
    assert "without the classes tagged absent" in r["message"]
    np.testing.assert_array_equal(p.mask(i, "final"), want)
    assert p.mask_info(i, "final").source == "app:accepted(predicted:model:test+tags)"
    p.close()


# ------------------------------------------------------------------ list and navigation
def test_rows_filters_progress(project):
    ids = project.image_ids()
    project.save_scribbles(ids[0], _scribbles())
    project.set_tag(ids[1], 1, "present")
    project.save_mask(ids[2], np.zeros((64, 64), np.uint8), "predicted", source="t", uncertainty=0.5)
    rows = handlers.image_rows(project)
    assert [r[2] for r in rows] == ["scribbled", "tagged", "predicted · u 0.50", "untouched"]
    assert [r[0] for r in handlers.image_rows(project, "untouched")] == [ids[3]]
    assert [r[1] for r in handlers.image_rows(project, "all", ids[1])] == [
        "disc0.png", "▶ disc1.png", "disc2.png", "disc3.png"]
    # the predicted image is the model's work: nobody has annotated it yet
    assert "2 / 4 annotated" in handlers.progress_text(project)
    assert handlers.next_unannotated(project, ids[1]) == ids[2]
    project.save_mask(ids[0], np.zeros((64, 64), np.uint8), "predicted", source="t", uncertainty=0.5)
    assert handlers.image_rows(project)[0][2].startswith("predicted")  # strokes under a prediction still count
    assert "2 / 4 annotated" in handlers.progress_text(project)
    project.save_mask(ids[2], np.zeros((64, 64), np.uint8), "final", source="t")
    assert "3 / 4 annotated" in handlers.progress_text(project) and "final: 1" in handlers.progress_text(project)
    project.save_mask(ids[3], np.zeros((64, 64), np.uint8), "imported", source="t")
    # an imported mask is not a final one (an export of final masks leaves it out): listed apart
    assert "final: 1 · " in handlers.progress_text(project) and "imported: 1" in handlers.progress_text(project)
    with pytest.raises(AnnotationError):
        handlers.image_rows(project, "bogus")


def test_predicted_images_with_strokes_stay_told_apart(project, token):
    """After Predict, an image a person scribbled (and did not accept) is listed as
    'predicted · strokes', the Scribbled filter still finds it, the progress line counts it and
    the title says it; before, it looked like an untouched predicted image and the filter was empty."""
    ids = project.image_ids()
    project.save_scribbles(ids[0], _scribbles())
    project.save_scribbles(ids[1], _scribbles(1))
    for i in ids[:3]:
        project.save_mask(i, np.zeros((64, 64), np.uint8), "predicted", source="t", uncertainty=0.5)
    project.save_mask(ids[1], np.zeros((64, 64), np.uint8), "final", source="t")  # accepted: not "scribbled"
    rows = handlers.image_rows(project)
    assert [r[2] for r in rows] == ["predicted · strokes · u 0.50", "final", "predicted · u 0.50", "untouched"]
    assert [r[0] for r in handlers.image_rows(project, "scribbled")] == [ids[0]]
    assert [r[0] for r in handlers.image_rows(project, "predicted")] == [ids[0], ids[2]]
    assert handlers.neighbour(project, None, +1, "scribbled") == ids[0]
    assert "predicted: 2 (1 with strokes)" in handlers.progress_text(project)
    assert "status **predicted · strokes**" in handlers.title_text(project, ids[0])
    assert "status **predicted**" in handlers.title_text(project, ids[2])
    # a first stroke on a predicted image changes the status the canvas holds: the page refreshes the list
    assert handlers.load_message(project, token, ids[2])["status"] == "predicted"
    r = handlers.canvas_save({"project": token, "image_id": ids[2], "labels": canvas.rle_encode(_scribbles(2)),
                              "version": 0})
    assert r["status"] == "predicted · strokes"
    assert handlers.image_rows(project)[2][2].startswith("predicted · strokes")
    project.undo_scribbles(ids[2])
    project.save_mask(ids[3], np.zeros((64, 64), np.uint8), "pseudo", source="tags:cam")  # tags, no strokes
    project.save_scribbles(ids[3], _scribbles(3))
    assert handlers.image_rows(project)[3][2] == "pseudo · strokes"
    assert [r[0] for r in handlers.image_rows(project, "scribbled")] == [ids[0], ids[3]]


def test_an_empty_project_has_a_whole_progress_line(tmp_path):
    p = Project.create(tmp_path / "empty", classes=["background", "object"])
    text = handlers.progress_text(p)
    assert "0 / 0 annotated" in text and not text.rstrip().endswith("·") and "final ·" not in text
    p.close()


def test_a_long_image_list_is_sent_a_block_at_a_time(project, monkeypatch):
    ids = project.image_ids()
    rows, label = handlers.image_list(project, "all", ids[0])
    assert len(rows) == len(ids) and label == f"Images: {len(ids)}"
    monkeypatch.setattr(handlers, "LIST_ROWS", 2)
    rows, label = handlers.image_list(project, "all", ids[3])  # the block holding the image shown
    assert [r[0] for r in rows] == ids[2:4] and rows[1][1].startswith(handlers.CURRENT_MARK)
    assert label.startswith(f"Images: 3–4 of {len(ids)}")
    assert [r[0] for r in handlers.image_list(project, "all", None)[0]] == ids[:2]
    project.set_tag(ids[3], 1, "present")
    rows, label = handlers.image_list(project, "tagged", ids[0])
    assert [r[0] for r in rows] == [ids[3]] and label == "Images (tagged): 1"


def test_go_to_an_image_by_id_or_name(project):
    ids = project.image_ids()
    assert handlers.find_image(project, str(ids[2])) == ids[2]
    assert handlers.find_image(project, " DISC3.png ") == ids[3]
    assert handlers.find_image(project, "disc1") == ids[1]  # the name without its extension
    with pytest.raises(AnnotationError, match=f"{len(ids)} images match 'disc'"):
        handlers.find_image(project, "disc")
    with pytest.raises(AnnotationError, match="no image id or name matches 'cat'"):
        handlers.find_image(project, "cat")
    with pytest.raises(AnnotationError, match="type an image id"):
        handlers.find_image(project, "  ")


def test_next_most_uncertain_walks_down_the_ranking(project):
    ids = project.image_ids()
    for i, u in zip(ids, (0.5, 0.9, 0.5, 0.7)):
        project.save_mask(i, np.zeros((64, 64), np.uint8), "predicted", source="t", uncertainty=u)
    walk, cur = [], None
    for _ in range(6):
        cur = handlers.next_most_uncertain(project, cur)
        walk.append(cur)
    # most uncertain first, ties by id, then back to the top (it went 1 -> 3 -> 1 -> 3 before)
    assert walk == [ids[1], ids[3], ids[0], ids[2], ids[1], ids[3]]
    project.save_mask(ids[0], np.zeros((64, 64), np.uint8), "final", source="t")
    # just accepted (final, out of the ranking): the one after where it stood, not back to the top,
    # which the reviewer saw and skipped (bug hunt 45)
    assert handlers.next_most_uncertain(project, ids[0]) == ids[2]
    assert handlers.next_most_uncertain(project, ids[3]) == ids[2]  # ids[0] is out of the walk now
    assert handlers.next_most_uncertain(project, ids[2]) == ids[1]  # the last: wraps to the top
    for i in ids[2:]:
        project.save_mask(i, np.zeros((64, 64), np.uint8), "final", source="t")
    res = handlers.resolve_navigation(project, ids[1], "uncertain")
    assert res.image_id == ids[1] and res.message == "This is the only predicted mask left to review."


def test_navigation(project):
    ids = project.image_ids()
    assert handlers.neighbour(project, ids[0], +1) == ids[1]
    assert handlers.neighbour(project, ids[-1], +1) == ids[0]
    assert handlers.neighbour(project, ids[0], -1) == ids[-1]
    assert handlers.neighbour(project, None, +1) == ids[0]
    project.save_scribbles(ids[1], _scribbles())
    assert handlers.next_unannotated(project, ids[0]) == ids[2]
    assert handlers.neighbour(project, ids[0], +1, "scribbled") == ids[1]
    assert handlers.next_most_uncertain(project, None) is None
    for i, u in zip(ids, (0.1, 0.7, 0.4, 0.2)):
        project.save_mask(i, np.zeros((64, 64), np.uint8), "predicted", source="t", uncertainty=u)
    assert handlers.next_most_uncertain(project, None) == ids[1]
    assert handlers.next_most_uncertain(project, ids[1]) == ids[2]
    project.save_mask(ids[2], np.zeros((64, 64), np.uint8), "final", source="t")
    assert handlers.next_most_uncertain(project, ids[1]) == ids[3]
    # a prediction alone is not an annotation: "Next unannotated" still stops there
    assert handlers.resolve_navigation(project, ids[0], "unannotated").image_id == ids[3]
    project.set_tag(ids[0], 1, "present")
    project.set_tag(ids[3], 1, "absent")
    res = handlers.resolve_navigation(project, ids[0], "unannotated")
    assert res.image_id == ids[0] and "Every image" in res.message
    empty = Project.create(project.root.parent / "empty")
    assert "No images yet" in handlers.resolve_navigation(empty, None, "unannotated").message
    with pytest.raises(AnnotationError):
        handlers.resolve_navigation(project, ids[0], "sideways")


def test_a_reload_reopens_the_last_image_of_each_project(project, tmp_path):
    ids = project.image_ids()
    assert handlers.resume_image(project, {}) == ids[0]  # a new browser: the first image
    seen = handlers.remember_image(project, {}, ids[2])
    other = Project.create(tmp_path / "other")
    seen = handlers.remember_image(other, seen, None)  # a project with no image shown adds nothing
    assert handlers.resume_image(project, seen) == ids[2]
    assert handlers.resume_image(other, seen) is None
    project.delete_image(ids[2])  # gone since: the first image again, never an error
    assert handlers.resume_image(project, seen) == ids[0]
    assert handlers.resume_image(project, "garbage from the browser") == ids[0]
    for k in range(handlers.REMEMBERED_PROJECTS + 5):  # the browser's list stays short
        seen = handlers.remember_image(Project.create(tmp_path / f"p{k}"), seen, 1)
    assert len(seen) == handlers.REMEMBERED_PROJECTS and str(project.root) not in seen


def test_a_reload_reopens_the_project_open_last_if_it_still_opens(project, tmp_path):
    """A reload reopens the project this browser opened last (not the startup one); one deleted or
    damaged since gives the startup project and a sentence saying why, never an error."""
    other = handlers.open_project(str(tmp_path / "other"), "bg, cat")
    last = handlers.remember_project(other, project)
    got, note = handlers.reopen_project(last, project)
    assert got.root == other.root and note == ""
    tok = handlers.register_project(got)  # opened in this server: the same project again
    assert handlers.reopen_project(last, project)[0] is handlers.project_for(tok)
    assert handlers.reopen_project(handlers.remember_project(project, project), project) == (project, "")
    for garbage in (None, {}, "x", {"project": 5, "start": str(project.root)}, [1]):  # a new browser, or junk
        assert handlers.reopen_project(garbage, project) == (project, "")
    # the app started on another project since: that one, as asked for on the command line
    elsewhere = handlers.remember_project(other, Project.create(tmp_path / "third"))
    assert handlers.reopen_project(elsewhere, project) == (project, "")
    import shutil

    other.close()
    shutil.rmtree(other.root)  # deleted since
    got, note = handlers.reopen_project(last, project)
    assert got is project and str(other.root) in note and "no longer there" in note
    assert not other.root.exists()  # not created again
    bad = tmp_path / "damaged"
    bad.mkdir()
    (bad / "project.db").write_bytes(b"this is not a database")
    got, note = handlers.reopen_project({"project": str(bad), "start": str(project.root)}, project)
    assert got is project and str(bad) in note and "could not be reopened" in note and "Traceback" not in note


# ------------------------------------------------------------------ classes, images, export, projects
def test_classes(project):
    assert handlers.add_class(project, "car", "#00ff00") == "Added class 2: car."
    handlers.rename_class(project, 2, "truck")
    handlers.recolor_class(project, 2, "#0000ff")
    assert handlers.class_rows(project)[2] == [2, "truck", "#0000ff"]
    with pytest.raises(AnnotationError):
        handlers.add_class(project, "Truck")
    with pytest.raises(AnnotationError):
        handlers.rename_class(project, None, "x")
    with pytest.raises(AnnotationError):
        handlers.recolor_class(project, 1, "not a colour")


def test_new_classes_get_distinct_colours_and_commas_are_refused(project):
    """The page's colour picker offers the palette's next colour (every added class was the same
    green unless the person opened the picker); a comma would split the class lists."""
    first = handlers.next_class_color(project)
    handlers.add_class(project, "sky", first)
    second = handlers.next_class_color(project)
    handlers.add_class(project, "grass", second)
    assert first != second and len({c["color"] for c in handlers.class_list(project)}) == 4
    with pytest.raises(AnnotationError, match="comma"):
        handlers.add_class(project, "a,b")


def test_renaming_a_class_keeps_the_trained_models_usable(project):
    """A rename keeps the class index, so the models trained before it still predict (the class-name
    check refused them: 'was trained for classes [...], train a new model')."""
    from segmenter.models import ModelConfig, create_model, save_checkpoint
    from segmenter.predict import Predictor

    cfg = ModelConfig(classes=project.class_names, size=32)
    path = save_checkpoint(project.models_dir / "m", create_model(cfg), cfg)
    handlers.rename_class(project, 1, "horse")
    pred = Predictor.from_checkpoint(path, expected_classes=project.class_names, device="cpu")
    assert pred.cfg.classes == ["background", "horse"]


def test_a_finished_job_refreshes_the_shown_image_without_reloading_it(project, token):
    """After a job (or an import) the shown image gets a 'refresh' (its overlays and status), not a
    'load' that reset the canvas under a stroke; an image whose only mask is a tag pseudo-mask opens
    on it (the live preview of no strokes showed nothing)."""
    iid = project.image_ids()[0]
    msg = handlers.refresh_message(project, token, iid)
    assert msg["type"] == "refresh" and msg["image_id"] == iid and msg["overlay_kinds"] == ["preview"]
    project.save_mask(iid, np.zeros((64, 64), np.uint8), "pseudo", source="tags:cam")
    msg = handlers.refresh_message(project, token, iid)
    assert msg["overlay_kinds"] == ["preview", "pseudo"] and msg["overlay_kind"] == "pseudo"
    assert msg["status"] == project.status(iid)
    project.save_scribbles(iid, _scribbles())
    assert handlers.default_overlay_kind(project, iid) == "preview"  # strokes: their live preview


def test_a_refresh_after_an_upload_says_the_new_image_count(project, token):
    """The canvas's status line kept "disc0.png (1 / 4)" after an upload (the title said 5): the
    refresh sent to the image shown carries its name and position now."""
    iid = project.image_ids()[0]
    assert handlers.refresh_message(project, token, iid)["position"] == "1 / 4"
    project.add_image(encode_image_png(make_disc_image(64, seed=50)[0]), name="new.png")
    msg = handlers.refresh_message(project, token, iid)
    assert msg["position"] == "1 / 5" and msg["name"] == "disc0.png"
    assert msg["position"] == handlers.load_message(project, token, iid)["position"]


def test_open_project_wants_a_full_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AnnotationError, match="full path"):
        handlers.open_project("myproj", "bg, cat")
    assert not (tmp_path / "myproj").exists()
    p = handlers.open_project(f'"{tmp_path / "quoted"}"', "bg, cat")  # pasted with its quotes
    assert p.root == tmp_path / "quoted"
    p.close()


def test_uploads_check_type_size_and_sanitise_names(project, tmp_path, monkeypatch):
    img, _, _ = make_disc_image(64, seed=42)
    good = tmp_path / "good.png"
    good.write_bytes(encode_image_png(img))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not an image at all")
    msg = handlers.add_uploads(project, [str(good), str(text), str(fake)], ["../../etc/evil name.png", "notes.txt",
                                                                            "fake.png"])
    assert msg.startswith("Added 1 image(s).")
    assert "notes.txt: not an image file" in msg and "fake.png" in msg
    added = project.images()[-1]
    assert "/" not in added.name and ".." not in added.name and added.name.endswith(".png")
    monkeypatch.setattr(handlers, "MAX_UPLOAD_BYTES", 10)
    img2, _, _ = make_disc_image(64, seed=43)
    big = tmp_path / "big.png"
    big.write_bytes(encode_image_png(img2))
    assert "over the" in handlers.add_uploads(project, [str(big)])
    with pytest.raises(AnnotationError):
        handlers.add_uploads(project, [])


def test_an_upload_renamed_for_a_name_clash_is_said(project, tmp_path):
    """DISC1.png beside disc1.png is stored as DISC1_2.png (names are unique ignoring case); the
    message said only "Added 1 image(s)"."""
    up = tmp_path / "DISC1.png"
    up.write_bytes(encode_image_png(make_disc_image(64, seed=61)[0]))
    msg = handlers.add_uploads(project, [str(up)])
    assert msg.startswith("Added 1 image(s).")
    assert "DISC1.png was added as DISC1_2.png: the project already has disc1.png" in msg
    assert project.images()[-1].name == "DISC1_2.png"
    other = tmp_path / "fresh.png"
    other.write_bytes(encode_image_png(make_disc_image(64, seed=62)[0]))
    assert handlers.add_uploads(project, [str(other)]) == "Added 1 image(s)."


def _dataset_with_scribble_set(root, names, set_name="real"):
    """A folder dataset (images, meta.json) with one scribble map per image in ``scribbles/<set_name>``."""
    import json

    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "scribbles" / set_name).mkdir(parents=True)
    for k, name in enumerate(names):
        img, _, scr = make_disc_image(64, seed=200 + k)
        (root / "images" / f"{name}.png").write_bytes(encode_image_png(img))
        Image.fromarray(scr).save(root / "scribbles" / set_name / f"{name}.png")
    (root / "meta.json").write_text(json.dumps({"classes": ["background", "object"]}))
    return root


def test_add_folder_of_strokes_in_another_layer_switches_an_empty_layer(tmp_path):
    p = Project.create(tmp_path / "p", classes=["background", "object"])
    tok = handlers.register_project(p)
    d = _dataset_with_scribble_set(tmp_path / "d", ["a", "b"])
    msg = handlers.add_folder(p, str(d))
    # the app's layer had no strokes: it turns to the imported one, as a restart would
    assert p.scribble_layer == "real", msg
    assert ("The imported strokes are in scribble layer 'real', and layer 'default' has no strokes: the app now "
            "draws in and trains on layer 'real'") in msg
    assert "scribble layer `real`" in handlers.project_line(p)
    iid = p.image_ids()[0]
    assert handlers.load_message(p, tok, iid)["labels"] is not None  # the page shows the imported strokes
    p.close()


def test_add_folder_of_strokes_in_another_layer_says_how_to_use_them(tmp_path):
    p = Project.create(tmp_path / "p", classes=["background", "object"])
    iid = p.add_image(encode_image_png(make_disc_image(64, seed=0)[0]), name="mine.png").id
    p.save_scribbles(iid, _scribbles())
    msg = handlers.add_folder(p, str(_dataset_with_scribble_set(tmp_path / "d", ["a", "b"])))
    assert p.scribble_layer == "default"
    assert msg.splitlines()[-1] == ("The imported strokes are in scribble layer 'real', which the app does not draw "
                                    "in or train on (it uses layer 'default'): start the app with --layer real to "
                                    "use them.")
    # a folder of plain images says nothing of layers
    more = tmp_path / "plain"
    more.mkdir()
    (more / "x.png").write_bytes(encode_image_png(make_disc_image(64, seed=9)[0]))
    assert "layer" not in handlers.add_folder(p, str(more))
    p.close()


def test_add_folder(project, tmp_path):
    d = tmp_path / "more"
    d.mkdir()
    for k in range(2):
        (d / f"x{k}.png").write_bytes(encode_image_png(make_disc_image(64, seed=100 + k)[0]))
    assert "added 2 image(s)" in handlers.add_folder(project, str(d))
    assert len(project.image_ids()) == N_IMAGES + 2
    with pytest.raises(AnnotationError):
        handlers.add_folder(project, str(tmp_path / "missing"))
    with pytest.raises(AnnotationError):
        handlers.add_folder(project, "  ")


def test_export_zip(project):
    ids = project.image_ids()
    project.save_mask(ids[0], make_disc_image(64, seed=0)[1], "final", source="t")
    project.save_mask(ids[1], make_disc_image(64, seed=1)[1], "predicted", source="t")
    path, msg = handlers.export_zip(project, "folder", "final")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert "meta.json" in names and sum(n.startswith("masks/") for n in names) == 1
    assert any(project.exports_dir.glob("*.zip"))
    path2, _ = handlers.export_zip(project, "folder", "best")
    with zipfile.ZipFile(path2) as zf:
        assert sum(n.startswith("masks/") for n in zf.namelist()) == 2
    with pytest.raises(AnnotationError):
        handlers.export_zip(project, "nope", "best")
    with pytest.raises(AnnotationError):
        handlers.export_zip(project, "folder", "worst")


def test_open_project(tmp_path):
    p = handlers.open_project(str(tmp_path / "new"), "bg, cat, dog")
    assert p.class_names == ["bg", "cat", "dog"]
    again = handlers.open_project(str(tmp_path / "new"), "")
    assert again.root == p.root
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(AnnotationError):
        handlers.open_project(str(tmp_path / "busy"))
    with pytest.raises(AnnotationError):
        handlers.open_project("")
    with pytest.raises(AnnotationError, match="at least two classes"):
        handlers.open_project(str(tmp_path / "one"), "cell")
    assert not (tmp_path / "one").exists()
    tok = handlers.register_project(p)
    assert handlers.register_project(again) == tok and handlers.project_for(tok) is p
    with pytest.raises(AnnotationError):
        handlers.project_for("unknown")


# ------------------------------------------------------------------ jobs
def test_job_progress_cancel_and_failure():
    import threading

    gate = threading.Event()

    def body(job):
        for k in range(100):
            if job.cancel.is_set():
                return "stopped early"
            job.report(fraction=k / 100, epoch=1, epochs=1, step=k, steps=100, loss=1.0 / (k + 1),
                       loss_point=(k, 1.0 / (k + 1)))
            gate.wait(0.01)
        return "finished"

    job = jobs.start_job("test-key", "training", body)
    with pytest.raises(AnnotationError):
        jobs.start_job("test-key", "training", body)
    assert "Cancelling" in jobs.cancel_job("test-key")
    job.thread.join(5)
    snap = job.snapshot()
    assert snap["status"] == "cancelled" and snap["message"] == "stopped early"
    job = jobs.start_job("test-key", "training", body)
    job.thread.join(10)
    snap = job.snapshot()
    assert snap["status"] == "done" and snap["fraction"] == 1.0 and len(snap["losses"]) == 100
    html = jobs.progress_html(snap)
    assert "width:100.0%" in html and "<svg" in html and "finished" in html

    def bad(job):
        raise AnnotationError("no labels yet: draw scribbles first.")

    job = jobs.start_job("test-key", "training", bad)
    job.thread.join(5)
    assert job.snapshot()["status"] == "failed" and "draw scribbles" in job.snapshot()["message"]
    assert "Nothing is running" in jobs.cancel_job("test-key")
    assert "Not trained" in jobs.progress_html(None)


# ------------------------------------------------------------------ removing images, deleting classes
def test_removing_an_image_says_what_goes_and_shows_the_next_one(project, token):
    """The page removes an image as ``remove-image`` does (the same store call, the same words for
    what goes with it), then shows the next image, the previous one after the last, none at the end;
    a save for the removed image is answered with a sentence and ``gone``."""
    from segmenter.commands.review import what_goes

    ids = project.image_ids()
    project.save_scribbles(ids[1], _scribbles(1))
    project.set_tag(ids[1], 1, "present")
    project.save_mask(ids[1], make_disc_image(64, seed=1)[1], "final", source="test")
    info = project.image_info(ids[1])
    goes = what_goes(project, info)
    assert "mask version" in goes and "strokes in layer(s) default" in goes and "1 tag(s)" in goes
    image_id, question = handlers.remove_question(project, ids[1])
    assert image_id == ids[1] and "Really remove **disc1.png** (image 2 of 4)" in question and goes in question
    assert project.image_ids() == ids  # asking removes nothing
    shown, msg = handlers.remove_image(project, ids[1])
    assert shown == ids[2] and project.image_ids() == [ids[0], ids[2], ids[3]]
    assert msg.startswith(f"Removed disc1.png (id {ids[1]}) with {goes}; 3 image(s) left")
    r = handlers.canvas_save({"project": token, "image_id": ids[1], "labels": canvas.rle_encode(_scribbles(1)),
                              "version": 1})
    assert r.get("gone") is True and "no longer in this project" in r["error"] and "Traceback" not in r["error"]
    assert "gone" in handlers.canvas_preview({"project": token, "image_id": ids[1], "kind": "preview"})
    with pytest.raises(AnnotationError, match="no longer in this project"):
        handlers.remove_image(project, ids[1])  # a second click in another window
    assert handlers.remove_image(project, ids[3])[0] == ids[2]  # the last one: the previous is shown
    _, msg = handlers.remove_image(project, ids[2])
    assert "which had no labels" in msg and "1 image(s) left" in msg
    assert handlers.remove_image(project, ids[0])[0] is None  # none left: the empty canvas
    assert handlers.load_message(project, token, None)["type"] == "empty"
    with pytest.raises(AnnotationError, match="no image is shown"):
        handlers.remove_question(project, None)


def test_the_image_shown_after_a_removal_follows_the_list_as_filtered(project):
    ids = project.image_ids()
    for i in (ids[0], ids[2]):
        project.save_scribbles(i, _scribbles())
    # the scribbled list is [0, 2]: after 0 comes 2 (not 1, which the list does not show)
    assert handlers.image_after_removal(project, ids[0], "scribbled") == ids[2]
    assert handlers.image_after_removal(project, ids[2], "scribbled") == ids[0]
    assert handlers.image_after_removal(project, ids[1], "scribbled") == ids[2]  # not listed: all images


def test_deleting_a_class_says_what_it_does_and_does_what_the_cli_does(project, token):
    """The confirmation counts what uses the class (the store's class_usage, worded as the store
    words it); the deletion is the store's (pixels unlabelled, classes after it move down); a page
    still drawing with the old class numbers is refused; fewer than two classes is refused before
    anything is asked, with the store's message."""
    iid = project.image_ids()[0]
    handlers.add_class(project, "car", "#0000ff")
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 1  # object
    scr[30:35, 5:20] = 2  # car
    project.save_scribbles(iid, scr)
    project.set_tag(iid, 1, "present")
    with pytest.raises(AnnotationError, match="choose the class to delete"):
        handlers.delete_class_question(project, None)
    name, question = handlers.delete_class_question(project, 1)
    assert name == "object" and "Really delete class **object** (index 1)?" in question
    assert "used by 1 scribble map and 1 tag: its pixels become unlabelled and its tags are removed" in question
    assert "The classes after it (car) each move down one index" in question
    assert "trained model" not in question  # none yet
    import json

    project.models_dir.mkdir(exist_ok=True)
    (project.models_dir / "m1.json").write_text(json.dumps({"config": {"classes": project.class_names}}))
    assert "1 trained model(s) (m1) cannot predict after it: train a new model." in \
        handlers.delete_class_question(project, 1)[1]  # bug hunt 43, #6
    (project.models_dir / "m1.json").unlink()
    assert project.num_classes == 3  # asking deletes nothing
    idx, msg = handlers.delete_class(project, "object")
    assert idx == 1 and msg.startswith("Deleted class 'object' (it was used by 1 scribble map and 1 tag")
    assert project.class_names == ["background", "car"] and project.tags(iid) == {}
    stored = project.scribbles(iid)
    assert (stored[5:10, 5:20] == 255).all() and (stored[30:35, 5:20] == 1).all()
    old_page = {"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "n_classes": 3,
                "version": project.scribble_version(iid)}
    r = handlers.canvas_save(old_page)
    assert "the classes were changed in another window" in r["error"] and "Reload the page" in r["error"]
    assert "error" not in handlers.canvas_save({**old_page, "labels": canvas.rle_encode(stored), "n_classes": 2})
    with pytest.raises(AnnotationError, match="no class 'object' any more"):
        handlers.delete_class(project, "object")
    with pytest.raises(AnnotationError, match="at least two classes"):
        handlers.delete_class_question(project, 1)
    with pytest.raises(AnnotationError, match="at least two classes"):
        handlers.delete_class(project, "car")
    assert project.class_names == ["background", "car"]


def test_removing_an_image_or_deleting_a_class_is_refused_while_a_job_runs(project):
    """... and adding or renaming one (bug hunt 45: a class renamed during a training threw the
    whole run away at its end, and Predict then chose that unusable model)."""
    import threading

    ids = project.image_ids()
    handlers.add_class(project, "car")
    gate = threading.Event()
    job = jobs.start_job(str(project.root), "training", lambda job: gate.wait(30) and "done")
    try:
        for call in (lambda: handlers.remove_question(project, ids[0]),
                     lambda: handlers.remove_image(project, ids[0]),
                     lambda: handlers.delete_class_question(project, 2),
                     lambda: handlers.delete_class(project, "car"),
                     lambda: handlers.add_class(project, "bus"),
                     lambda: handlers.rename_class(project, 2, "lorry")):
            with pytest.raises(AnnotationError, match="a training job is running on this project"):
                call()
        assert handlers.recolor_class(project, 2, "#123456")  # a colour is no change to the model
    finally:
        gate.set()
        job.thread.join(10)
    assert project.image_ids() == ids and project.num_classes == 3
    handlers.remove_image(project, ids[0])
    handlers.delete_class(project, "car")
    assert project.image_ids() == ids[1:] and project.num_classes == 2


def test_the_live_preview_of_a_large_image_is_computed_small_and_accepted_at_full_size(project, token, monkeypatch):
    """While drawing, the preview of an image larger than PREVIEW_SIDE is computed and sent at
    that size (the page stretches it over the image; a 12-megapixel photo took 5 s a stroke);
    Accept and the mask editor get the full-size mask."""
    monkeypatch.setattr(handlers, "PREVIEW_SIDE", 32)
    iid = project.image_ids()[0]
    _, gt, scr = make_disc_image(64, seed=0)
    handlers.canvas_save({"project": token, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    r = handlers.canvas_preview({"project": token, "image_id": iid, "kind": "preview"})
    shown = canvas.decode_data_url(r["overlay"])
    assert shown.shape[:2] == (32, 32)
    editor = handlers.canvas_mask_layer({"project": token, "image_id": iid, "shown": "preview"})
    assert editor["kind"] == "preview" and canvas.rle_decode(editor["labels"], (64, 64)).shape == (64, 64)
    handlers.canvas_accept({"project": token, "image_id": iid, "kind": "preview", "final_id": 0})
    final = project.mask(iid, "final")
    assert final.shape == (64, 64) and (final[scr != 255] == scr[scr != 255]).all()
    from segmenter.metrics import image_iou

    assert image_iou(final, gt, 2) > 0.8


def test_an_uploaded_nifti_volume_becomes_its_slices(project, tmp_path):
    """A .nii.gz dropped on the page (Gradio keeps it under a temporary name) is added as its
    slices, named after the uploaded name, in an image set; a damaged volume is named, nothing added."""
    import nibabel as nib

    vol = np.random.default_rng(0).normal(100, 20, (40, 30, 4)).astype(np.int16)
    up = tmp_path / "tmpab12cd.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.2, 1.2, 6.0, 1.0])), str(up))
    before = len(project.image_ids())
    msg = handlers.add_uploads(project, [str(up)], ["heart scan.nii.gz"])
    assert msg.startswith("Added 4 image(s)."), msg
    names = [im.name for im in project.images()][before:]
    assert names == [f"heart scan_z00{k}.png" for k in range(4)], names
    assert project.load_image(project.image_ids()[-1]).shape == (30, 40)
    assert len(project.image_set(project.image_sets()[-1])) == 4
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    msg = handlers.add_uploads(project, [str(bad)])
    assert msg.startswith("Added 0 image(s).") and "broken.nii.gz" in msg and "Traceback" not in msg
    assert len(project.image_ids()) == before + 4


def test_a_busy_database_is_a_sentence_and_the_page_sends_the_strokes_again(tmp_path, monkeypatch, capsys):
    """Another program holding project.db past the 30 s a write waits: the command line printed a
    traceback, the page "internal error (OperationalError: database is locked)" and never sent the
    strokes again (bug hunt 47, #7). Both now say what happened in one sentence; the page's answer
    asks it to send them again by itself."""
    import sqlite3

    from segmenter.cli import main

    p = Project.create(tmp_path / "p", classes=["background", "object"])
    iid = p.add_image(encode_image_png(make_disc_image(64, seed=0)[0]), name="a.png").id
    tok = handlers.register_project(p)

    def locked(*a, **k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Project, "save_scribbles", locked)
    monkeypatch.setattr(Project, "set_tag", locked)
    scr = np.full((64, 64), 255, np.uint8)
    scr[5:10, 5:20] = 1
    r = handlers.canvas_save({"project": tok, "image_id": iid, "labels": canvas.rle_encode(scr), "version": 0})
    assert r["retry"] is True and r["error"].startswith("the project's database is busy: another program")
    assert "internal error" not in r["error"] and "sent again by themselves" in r["error"]
    assert main(["tag", str(p.root), "a.png", "--present", "object"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the project's database is busy") and "Traceback" not in err
    monkeypatch.setattr(Project, "set_tag", lambda *a, **k: (_ for _ in ()).throw(sqlite3.OperationalError("no such table: tags")))
    with pytest.raises(sqlite3.OperationalError):  # another database failure is not called busy
        main(["tag", str(p.root), "a.png", "--present", "object"])
    p.close()
