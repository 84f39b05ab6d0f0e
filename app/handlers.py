"""The app's logic: plain functions over numpy arrays and :class:`~annotations.store.Project`.

Nothing here imports gradio; ``app/ui.py`` wires these functions to components and turns every
:class:`~annotations.errors.AnnotationError` into a message in the page. Label maps are
``(H, W) uint8`` (class index, 255 = none); images ``(H, W)`` or ``(H, W, 3)`` uint8.

The canvas in the page talks to :func:`canvas_save`, :func:`canvas_preview`, :func:`canvas_tag`,
... with small JSON dicts (see ``static/canvas.js``); each returns a dict and never raises for a
person's mistake: errors come back as ``{"error": message}`` so the page can show them while
keeping the strokes it holds. Undo and redo live in the page (its own strokes only) and reach the
store as saves, merged like any other (:func:`save_scribbles_merged`).
"""
from __future__ import annotations

import hashlib
import html
import itertools
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from annotations import imageio
from annotations.errors import AnnotationError, NotFoundError, StaleWriteError
from annotations.formats.nifti import is_nifti_name
from annotations.store import (BACKGROUND_NAMES, DEFAULT_LAYER, STATUS_ORDER, Project, check_new_project_classes,
                               sanitize_name)

from . import canvas, jobs

IGNORE = 255
#: Uploads larger than this are refused (bytes); the page also passes it to Gradio.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_FILES = 500
OVERLAY_KINDS = ("preview", "final", "predicted", "imported", "pseudo")
FILTERS = ("all",) + STATUS_ORDER
#: A status counts as "annotated" for the progress count and "next unannotated".


class AppError(AnnotationError):
    """A request the app cannot carry out (bad input from the page, no such project...)."""


class ImageGoneError(AppError):
    """The page asked about an image that is not (or no longer) in the project."""


# ---------------------------------------------------------------------------------- projects
_PROJECTS: dict[str, Project] = {}
_PROJECTS_LOCK = threading.Lock()


def register_project(project: Project) -> str:
    """An opaque token for ``project`` that the page sends back; the same root gives the same token."""
    with _PROJECTS_LOCK:
        for tok, p in _PROJECTS.items():
            if p.root == project.root:
                return tok
        tok = uuid.uuid4().hex[:16]
        _PROJECTS[tok] = project
        return tok


def project_for(token: str | None, root: str | None = None) -> Project:
    """The project of ``token``. A token this server does not know (it restarted since the page
    loaded: tokens live in memory) is taken as the project this server has open (the one it was
    started on, registered when the page is built, or one opened since) when the page says it
    shows that project's folder (``root``), so the page's unsaved strokes still get saved; a page
    can never name another folder."""
    tok = str(token or "")
    p = _PROJECTS.get(tok)
    if p is None and tok and isinstance(root, str) and root:
        try:
            want = Path(root).resolve()
        except (OSError, ValueError, RuntimeError):
            want = None
        with _PROJECTS_LOCK:  # only a project this server has open (Project.root is resolved)
            p = next((q for q in _PROJECTS.values() if want is not None and q.root == want), None)
            if p is not None:
                _PROJECTS[tok] = p
    if p is None:
        raise AppError("this page refers to a project that is not open on the server (the app was restarted, "
                       "or another project is open); reload the page.")
    return p


def choose_layer(project, requested: str | None) -> tuple[str, str]:
    """The scribble layer the app works in, and a line for the console (``""`` if nothing to say).
    ``requested`` wins; otherwise ``default``, unless it holds no strokes and the project has other
    layers (an import puts a dataset's scribble set in a layer of its own name): then the first."""
    if requested is not None:
        layer = requested.strip()
        if not layer:
            raise ValueError("--layer needs a name.")
        layers = project.scribble_layers()
        if layer not in layers and layers:  # a new layer, or a typo: say where the strokes are
            return layer, (f"scribble layer: '{layer}' is new (no strokes yet); the project's strokes are in "
                           f"{', '.join(repr(x) for x in layers)}")
        return layer, ""
    alt = project.fallback_layer(DEFAULT_LAYER)
    if alt is None:
        return DEFAULT_LAYER, ""
    return alt, (f"scribble layer: '{alt}' (layer '{DEFAULT_LAYER}' has no strokes; the project has "
                 f"{', '.join(repr(x) for x in project.scribble_layers())}; --layer chooses another)")


def project_line(project: Project) -> str:
    """The page's project line (Markdown): the folder, and the scribble layer when it is not ``default``."""
    line = f"**Project** `{project.root}`"
    if project.scribble_layer != DEFAULT_LAYER:
        line += f" · scribble layer `{project.scribble_layer}`"
    return line


def open_project(path: str, classes_text: str = "") -> Project:
    """Open the project at ``path``, or create it with the comma-separated ``classes_text``."""
    path = str(path or "").strip().strip("'\"").strip()
    if not path:
        raise AppError("enter the folder of a project to open or create.")
    root = Path(os.path.expanduser(path))
    if not root.is_absolute():
        raise AppError(f"'{path}': give the folder's full path (e.g. {Path.home() / path}); a relative path would "
                       "be taken from wherever the app was started.")
    if (root / "project.db").is_file():
        project = Project.open(root)
        project.scribble_layer = choose_layer(project, None)[0]
        return project
    names = [c.strip() for c in str(classes_text or "").split(",") if c.strip()]
    if root.exists() and root.is_dir() and any(root.iterdir()):
        raise AppError(f"{root}: the folder is not empty and holds no project; choose an empty or new folder.")
    if names:
        check_new_project_classes(names)
    return Project.create(root, classes=names or None)


# ---------------------------------------------------------------------------------- list and navigation
CURRENT_MARK = "▶ "
#: The source of a final mask painted in the mask editor.
MASK_EDITOR_SOURCE = "app:mask-editor"
#: Rows of the image list sent to the page at a time.
LIST_ROWS = 100
#: Projects whose last shown image a browser remembers (a reload reopens that image).
REMEMBERED_PROJECTS = 20


#: Statuses ranked above "scribbled" that an image with strokes and no final or imported mask has
#: (a prediction, a pseudo-mask): it is listed as e.g. ``predicted · strokes`` and the "scribbled"
#: filter finds it.
STROKES_HIDDEN_BY = ("predicted", "pseudo")
#: Said after the status of an image that has strokes but no final or imported mask.
STROKES_MARK = " · strokes"


def _with_strokes(project: Project) -> set[int]:
    """The images whose strokes (any layer) hold at least one pixel."""
    return set(project.scribbled_ids())


def shows_strokes(status: str, has_strokes: bool) -> bool:
    """Whether an image of ``status`` is one a person scribbled and nobody accepted yet: its own
    status is ``scribbled``, or a prediction or pseudo-mask ranks above its strokes."""
    return status == "scribbled" or (has_strokes and status in STROKES_HIDDEN_BY)


#: Said after ``final`` when strokes were drawn after the final mask was accepted (the export
#: corrects it by them; Accept on the 'final' overlay stores the corrected one).
NEWER_STROKES_MARK = " · newer strokes"


def status_label(status: str, has_strokes: bool, final_is_older: bool = False) -> str:
    """The status as the list and the title say it: ``predicted · strokes`` for a predicted image
    a person drew on (the strokes are the person's work; the prediction alone is the model's);
    ``final · newer strokes`` for a final mask that strokes were drawn after (to review)."""
    if status == "final" and final_is_older:
        return status + NEWER_STROKES_MARK
    return status + (STROKES_MARK if has_strokes and status in STROKES_HIDDEN_BY else "")


def image_status(project: Project, image_id: int) -> str:
    """The image's status as the page says it (:func:`status_label`): the title, the canvas's
    status line (a first stroke on a predicted image changes it, so the list is refreshed)."""
    status = project.status(image_id)
    has_strokes = project.stroke_layer(image_id) is not None  # this image has strokes
    return status_label(status, has_strokes, status == "final" and project.final_older_than_strokes(image_id))


def image_rows(project: Project, status_filter: str = "all", current: int | None = None) -> list[list]:
    """Rows ``[id, name, status]`` of the images passing ``status_filter``; a predicted image's
    status carries its uncertainty, e.g. ``predicted · u 0.41``, and says when the image has
    strokes (``predicted · strokes · u 0.41``); the ``current`` image's name is marked with ``▶``.
    The ``scribbled`` filter lists every image with strokes and no final or imported mask, a
    predicted one too."""
    if status_filter not in FILTERS:
        raise AppError(f"unknown filter '{status_filter}' (known: {', '.join(FILTERS)}).")
    st = project.statuses()
    drawn = _with_strokes(project)
    older = set(project.finals_older_than_strokes())
    rows = []
    for info in project.images():
        s = st.get(info.id, "untouched")
        has = info.id in drawn
        if status_filter == "scribbled":
            if not shows_strokes(s, has):
                continue
        elif status_filter != "all" and s != status_filter:
            continue
        label = status_label(s, has, info.id in older)
        if s == "predicted":
            mi = project.mask_info(info.id, "predicted")
            if mi is not None and mi.uncertainty is not None:
                label += f" · u {mi.uncertainty:.2f}"
        rows.append([info.id, (CURRENT_MARK if info.id == current else "") + info.name, label])
    return rows


def image_list(project: Project, status_filter: str = "all", current: int | None = None) -> tuple[list[list], str]:
    """The image list as the page shows it: ``(rows, label)``. A long list is shown
    :data:`LIST_ROWS` rows at a time, the block holding ``current`` (re-sending thousands of rows
    after every stroke and every image change made the page slow); the label says which rows."""
    rows = image_rows(project, status_filter, current)
    n = len(rows)
    what = "Images" if status_filter == "all" else f"Images ({status_filter})"
    if n <= LIST_ROWS:
        return rows, f"{what}: {n}"
    pos = next((k for k, r in enumerate(rows) if r[0] == current), 0)
    start = (pos // LIST_ROWS) * LIST_ROWS
    window = rows[start:start + LIST_ROWS]
    return window, (f"{what}: {start + 1}–{start + len(window)} of {n} (Next / Previous move on; "
                    "Go to finds any image)")


def find_image(project: Project, text: str) -> int:
    """The image a person means by ``text``: its id (the list's first column), its file name
    (case-insensitive), or a unique part of the name. Anything else is an :class:`AppError` that says
    what matched."""
    text = (text or "").strip()
    if not text:
        raise AppError("type an image id or (part of) its name.")
    infos = project.images()
    if text.isdigit() and any(i.id == int(text) for i in infos):
        return int(text)
    low = text.lower()
    exact = [i for i in infos if i.name.lower() == low or Path(i.name).stem.lower() == low]
    if exact:
        return exact[0].id
    part = [i for i in infos if low in i.name.lower()]
    if len(part) == 1:
        return part[0].id
    if not part:
        raise AppError(f"no image id or name matches '{text}'.")
    names = ", ".join(i.name for i in part[:5]) + (", …" if len(part) > 5 else "")
    raise AppError(f"{len(part)} images match '{text}' ({names}): type more of the name.")


def progress_text(project: Project) -> str:
    """One line for a person: annotated / total and the count per status (imported masks apart
    from final ones: an export of "final masks only" leaves them out); a prediction or pseudo-mask
    over strokes is counted with them, e.g. ``predicted: 17 (2 with strokes)``."""
    st = project.statuses()
    n = len(st)
    if not n:
        return "**0 / 0 annotated**: no images yet."
    done = len(project.annotated_ids())
    drawn = _with_strokes(project)
    parts = []
    for k in STATUS_ORDER:
        ids = [i for i, s in st.items() if s == k]
        if not ids:
            continue
        part = f"{k}: {len(ids)}"
        if k in STROKES_HIDDEN_BY and (w := sum(1 for i in ids if i in drawn)):
            part += f" ({w} with strokes)"
        parts.append(part)
    return f"**{done} / {n} annotated** ({100.0 * done / n:.0f} %): " + " · ".join(parts)


def _ids(project: Project, status_filter: str = "all") -> list[int]:
    return [r[0] for r in image_rows(project, status_filter)] if status_filter != "all" else project.image_ids()


def neighbour(project: Project, current: int | None, step: int, status_filter: str = "all") -> int | None:
    """The image ``step`` places after ``current`` in the (filtered) list, wrapping around."""
    ids = _ids(project, status_filter)
    if not ids:
        return None
    if current is None or current not in ids:
        if current is None:
            return ids[0]
        after = [i for i in ids if (i > current if step > 0 else i < current)]
        return after[0 if step > 0 else -1] if after else ids[0 if step > 0 else -1]
    return ids[(ids.index(current) + step) % len(ids)]


def next_unannotated(project: Project, current: int | None) -> int | None:
    """The next image (after ``current``, wrapping) nobody has labelled yet (a predicted mask alone
    does not count, see :meth:`Project.annotated_ids`); ``None`` if every image is labelled."""
    done = project.annotated_ids()
    todo = [i for i in project.image_ids() if i not in done and i != current]
    if not todo:
        return None
    later = [i for i in todo if current is not None and i > current]
    return later[0] if later else todo[0]


def next_most_uncertain(project: Project, current: int | None) -> int | None:
    """Walks the images not yet final whose current mask is a prediction, least sure first
    (``MaskInfo.uncertainty``, ties by id): the one ranked after ``current`` (less uncertain),
    wrapping to the most uncertain after the last; when ``current`` left the ranking (just
    accepted, say) the one after where it stood, so a review goes on down the ranking; the most
    uncertain when ``current`` never had a prediction; ``current`` itself when it is the only one.
    ``None`` when there are no predictions."""
    st = project.statuses()

    def rank(i: int) -> tuple[float, int] | None:
        mi = project.mask_info(i, "predicted")
        if mi is None:
            return None
        return (-(mi.uncertainty if mi.uncertainty is not None else -1.0), i)

    ranked = sorted(rank(i) for i in project.image_ids() if st[i] == "predicted")
    order = [i for _, i in ranked]
    if not order:
        return None
    if current in order:
        return order[(order.index(current) + 1) % len(order)]
    mine = rank(current) if current is not None else None
    if mine is None:
        return order[0]
    return next((i for key, i in zip(ranked, order) if key > mine), order[0])


# ---------------------------------------------------------------------------------- canvas payloads
def class_list(project: Project) -> list[dict]:
    return [{"idx": c.idx, "name": c.name, "color": c.hex} for c in project.classes()]


def _colors(project: Project) -> list[tuple[int, int, int]]:
    return [c.color for c in project.classes()]


def background_class(project: Project) -> int | None:
    """0 when class 0's name says it is a background (a name of ``annotations.store.BACKGROUND_NAMES``,
    those :func:`annotations.store.default_color` draws grey), else ``None`` (camvid's class 0 is Sky).
    "Others absent" never tags it, and the mask overlays leave it unpainted."""
    names = project.class_names
    return 0 if names and names[0].strip().lower() in BACKGROUND_NAMES else None


def overlay_colors(project: Project) -> list[tuple[int, int, int] | None]:
    """The class colours of the mask overlays (live preview, stored masks): a background class 0
    (:func:`background_class`) is left unpainted (``None``), as CVAT and Label Studio leave it, so
    on a grey scan background and unlabelled never look alike and recolouring it never tints the
    whole image; its borders with other classes stay drawn. Its strokes, and the mask editor,
    still show it in its colour (the editor must tell background from unlabelled pixels)."""
    colors: list = list(_colors(project))
    if colors and background_class(project) == 0:
        colors[0] = None
    return colors


def default_overlay_kind(project: Project, image_id: int) -> str:
    """The overlay an image opens with: its final, imported or predicted mask; else the live
    preview of its strokes; else (no strokes) its pseudo-mask, e.g. one made from its tags."""
    for k in ("final", "imported", "predicted"):
        if project.mask_info(image_id, k) is not None:
            return k
    if project.mask_info(image_id, "pseudo") is not None and project.scribble_version(image_id) == 0:
        return "pseudo"
    return "preview"


def overlay_kinds(project: Project, image_id: int) -> list[str]:
    """The overlays the canvas offers for ``image_id``: the live preview and every stored mask kind."""
    return ["preview"] + [k for k in OVERLAY_KINDS[1:] if project.mask_info(image_id, k) is not None]


def tags_of(project: Project, image_id: int) -> dict[str, str]:
    """The image's tags as the canvas keeps them: ``{"class index": "present" | "absent"}``."""
    return {str(k): v for k, v in project.tags(image_id).items()}


def refresh_message(project: Project, token: str, image_id: int) -> dict:
    """For the image already shown, after a job or an import changed the project: the overlays and
    status it has now. The canvas keeps the person's mode, strokes and undo (a load would reset them)."""
    return {"type": "refresh", "nonce": uuid.uuid4().hex[:8], "project": token, "image_id": int(image_id),
            "name": project.image_info(image_id).name, "position": position_text(project, image_id),
            "overlay_kinds": overlay_kinds(project, image_id), "overlay_kind": default_overlay_kind(project, image_id),
            "status": image_status(project, image_id), "final_id": final_id(project, image_id),
            "tags": tags_of(project, image_id)}


def position_text(project: Project, image_id: int) -> str:
    """Where the image stands in the project, e.g. ``4 / 23`` (the canvas's status line says it)."""
    ids = project.image_ids()
    return f"{ids.index(int(image_id)) + 1} / {len(ids)}"


def load_message(project: Project, token: str, image_id: int | None) -> dict:
    """The message that loads an image into the canvas (see ``static/canvas.js``)."""
    nonce = uuid.uuid4().hex[:8]
    if image_id is None:
        return {"type": "empty", "nonce": nonce, "project": token, "root": str(project.root), "classes": class_list(project),
                "class_epoch": project.class_epoch, "message": "No image. Add images in the Project panel."}
    info = project.image_info(image_id)
    try:
        img = project.load_image(image_id)
    except AnnotationError as e:  # the file was deleted or damaged outside the tool
        return {"type": "empty", "nonce": nonce, "project": token, "root": str(project.root), "classes": class_list(project),
                "class_epoch": project.class_epoch,
                # Project.load_image names the file and the problem, then the command-line remedy
                "message": f"{info.name} cannot be shown: {str(e).split(': ', 1)[-1].split('. Put ', 1)[0]}. "
                           "Its annotations are kept; put the image file back, remove the image from the "
                           "project (Remove image), or go on to another image."}
    scr = project.scribbles(image_id)
    kinds = overlay_kinds(project, image_id)
    return {
        "type": "load", "nonce": nonce, "project": token, "root": str(project.root), "image_id": info.id, "name": info.name,
        "position": position_text(project, info.id), "width": info.width, "height": info.height,
        "image": canvas.image_data_url(img), "classes": class_list(project), "class_epoch": project.class_epoch,
        "layer": "scribbles",
        "labels": canvas.rle_encode(scr) if scr is not None else None,
        "version": project.scribble_version(image_id), "tags": tags_of(project, image_id),
        "overlay_kinds": kinds, "overlay_kind": default_overlay_kind(project, image_id),
        "status": image_status(project, image_id), "final_id": final_id(project, image_id),
    }


def title_text(project: Project, image_id: int | None) -> str:
    if image_id is None:
        return "### No image"
    info = project.image_info(image_id)
    ids = project.image_ids()
    status = image_status(project, image_id)
    return (f"### {info.name}  \n<span class='ws-sub'>image {ids.index(image_id) + 1} of {len(ids)} · "
            f"{info.width}×{info.height} px · status **{status}**</span>")


# ---------------------------------------------------------------------------------- saving strokes
def _blank(project: Project, image_id: int) -> np.ndarray:
    info = project.image_info(image_id)
    return np.full((info.height, info.width), IGNORE, np.uint8)


def save_scribbles_merged(project: Project, image_id: int, labels: np.ndarray, base_version: int,
                          author: str | None = None, retries: int = 8) -> tuple[int, np.ndarray | None]:
    """Save ``labels`` drawn on ``base_version``; never loses another writer's strokes.

    If the stored head moved since ``base_version`` (another window saved, or an undo), the
    pixels this edit changed relative to ``base_version`` are applied on top of the head.
    Returns ``(new_version, merged)`` with ``merged`` the map now stored when it differs from
    ``labels`` (else ``None``).
    """
    labels = project.check_label_map(image_id, labels)
    base_version = int(base_version or 0)
    for _ in range(retries):
        head = project.scribble_version(image_id)
        if head == base_version:
            try:
                return project.save_scribbles(image_id, labels, expected_version=base_version, author=author), None
            except StaleWriteError:
                continue
        base_map = project.scribbles(image_id, version=base_version) if base_version else None
        if base_map is None:
            base_map = _blank(project, image_id)
        head_map = project.scribbles(image_id)
        if head_map is None:
            head_map = _blank(project, image_id)
        # a three-way merge: this page's change (stroke, eraser, undo) lands only where the page
        # changed a pixel relative to its base AND nobody else changed it since (head == base there);
        # a pixel another window (or an undo there) changed since keeps that window's value
        delta = (labels != base_map) & (head_map == base_map)
        merged = head_map.copy()
        merged[delta] = labels[delta]
        if np.array_equal(merged, head_map):
            return head, merged
        try:
            return project.save_scribbles(image_id, merged, expected_version=head, author=author), merged
        except StaleWriteError:
            base_version, labels = head, merged
    raise AppError(f"image {image_id}: too many simultaneous edits; your strokes are kept in the page, draw again.")


def _mask_by_id(project: Project, image_id: int, mask_id: int) -> np.ndarray | None:
    for mi in project.mask_history(image_id):
        if mi.id == int(mask_id):
            return imageio.read_label_map(project.root / mi.file)
    return None


def save_mask_edit(project: Project, image_id: int, mask: np.ndarray, base_mask_id: int,
                   source_kind: str = "") -> tuple[int, np.ndarray | None]:
    """Save a mask painted in the mask editor as the image's ``final`` mask.

    ``base_mask_id`` is the id of the mask the edit started from (0 = none; negative = a live preview
    :func:`mask_layer` served, kept in memory). If another final
    mask was saved meanwhile, this edit's changed pixels are applied on top of it. Returns
    ``(new_mask_id, merged or None)``.
    """
    mask = project.check_label_map(image_id, mask, what="mask")
    cur = project.mask_info(image_id, "final")
    merged = None
    bid = int(base_mask_id or 0)
    if cur is not None and cur.id != bid:
        if bid < 0:  # the edit started from a live preview (see mask_layer)
            with _EDITOR_BASES_LOCK:
                base = _EDITOR_BASES.get((str(project.root), int(image_id), bid))
            if base is None:
                raise StaleWriteError("another window saved a final mask for this image while you painted, and "
                                      "where your edit started is no longer known (the app restarted): open the "
                                      "mask editor again and paint on their mask.")
        else:
            base = _mask_by_id(project, image_id, bid) if bid else None
        if base is None:
            base = _blank(project, image_id)
        head = imageio.read_label_map(project.root / cur.file)
        delta = mask != base
        merged = head.copy()
        merged[delta] = mask[delta]
        mask = merged
    check_labelled(project, image_id, mask, "Your mask edit was not saved")
    src = MASK_EDITOR_SOURCE + (f"(from {source_kind})" if source_kind and source_kind != "final" else "")
    info = project.save_mask(image_id, mask, "final", source=src)
    return info.id, merged


def _editor_start(project: Project, image_id: int, start_version: int) -> np.ndarray | None:
    """The map the mask editor opened with, by the ``version`` :func:`mask_layer` gave it (0: an
    empty map; negative: a live preview kept in memory; else a stored mask id); ``None`` if unknown."""
    if start_version == 0:
        return _blank(project, image_id)
    if start_version < 0:
        with _EDITOR_BASES_LOCK:
            base = _EDITOR_BASES.get((str(project.root), int(image_id), start_version))
        return None if base is None else base.copy()
    return _mask_by_id(project, image_id, start_version)


def take_back_mask_edit(project: Project, image_id: int, mask: np.ndarray, base_mask_id: int,
                        start_version, opened_final) -> bool:
    """The mask editor's map is back to what it opened with (Undo, Reset) on an image that had no
    final mask then (``opened_final`` 0): the final mask this visit saved is taken back (made not
    current, the history keeps it) instead of storing the unreviewed start map as a person's edit,
    so the status is what it was. Only when the current final mask is this page's own last save
    (``base_mask_id``) and an editor save, or there is none yet (nothing is saved then). Returns
    whether it did (``False``: save the map as usual)."""
    if not isinstance(opened_final, int) or isinstance(opened_final, bool) or opened_final != 0:
        return False
    if not isinstance(start_version, int) or isinstance(start_version, bool):
        return False
    start = _editor_start(project, image_id, start_version)
    if start is None or start.shape != mask.shape or not np.array_equal(start, mask):
        return False
    cur = project.mask_info(image_id, "final")
    if cur is None:
        return True  # never saved: nothing to take back
    if cur.id != int(base_mask_id or 0) or not cur.source.startswith(MASK_EDITOR_SOURCE):
        return False  # another window saved a final mask since: theirs is not this page's to remove
    project.clear_mask(image_id, "final")
    return True


def check_labelled(project: Project, image_id: int, mask: np.ndarray, what: str) -> None:
    """Refuse (:class:`AppError`, starting with ``what``) a final mask without one labelled pixel:
    stored, it counted the image as done, Predict skipped it and an export wrote it as "no object"
    (YOLO) or all-unlabelled."""
    if (np.asarray(mask) != IGNORE).any():
        return
    kept = ("the image keeps its previous final mask" if project.mask_info(image_id, "final") is not None
            else "the image still has no final mask")
    raise AppError(f"{what}: every pixel of that mask is unlabelled, and a final mask needs at least one "
                   f"labelled region (else the image would count as done and export as empty); {kept}. "
                   "Paint a region, or press Undo.")


# ---------------------------------------------------------------------------------- preview
_PREVIEW_CACHE: OrderedDict = OrderedDict()
_PREVIEW_LOCK = threading.Lock()


def preview_function():
    """The segmenter's live-preview function, ``(image, scribbles, num_classes, method=None,
    prior=None, colors=None, ..., max_side=None) -> (PseudoResult, overlay)``: the very function ``python -m segmenter
    bench latency`` times (see :func:`segmenter.benchmarks.latency.preview_function`)."""
    from segmenter.benchmarks.latency import preview_function as resolve

    return resolve()


def preview_prior(project: Project, image_id: int):
    """The mask the strokes correct in the live preview (its :class:`MaskInfo`), or None: a final
    mask painted in the mask editor when it is the newest (strokes drawn after hand edits correct
    those edits near the strokes instead of discarding them, so Accept keeps them), else the
    prediction."""
    pred = project.mask_info(image_id, "predicted")
    final = project.mask_info(image_id, "final")
    hand_edited = final is not None and (final.source or "").startswith(MASK_EDITOR_SOURCE)
    if hand_edited and (pred is None or final.id > pred.id):
        return final
    return pred


#: The live preview shown while drawing is computed with the image's long side at most this
#: (the overlay is stretched over the image); Accept and the mask editor compute it at full size.
PREVIEW_SIDE = 1024


def preview_result(project: Project, image_id: int, method: str | None = None,
                   scribbles: np.ndarray | None = None, max_side: int | None = None):
    """The live pseudo-mask: ``(PseudoResult, seconds)``, or ``(None, 0.0)`` when nothing is drawn.
    ``max_side``: compute it for display with the long side at most this (:data:`PREVIEW_SIDE`;
    a 12-megapixel photo took 5 s a stroke at full size, 0.4 s at 1024 px); ``None``: full size.

    ``scribbles``: ``(H, W) uint8`` strokes as the page holds them (default: the stored ones), so
    the preview need not wait for the save. Uses the segmenter's own preview function
    (:func:`segmenter.pseudo.preview`); on an image with a prediction the strokes correct it
    (predicted regions no stroke contradicts keep their class, see
    :func:`segmenter.preview.correct_prediction`). Cached by the strokes' content, the class count
    and the prediction.
    """
    scr = project.scribbles(image_id) if scribbles is None else project.check_label_map(image_id, scribbles)
    if scr is None or not (scr != IGNORE).any():
        return None, 0.0
    pred = preview_prior(project, image_id)  # a new prediction (or mask edit) changes the preview
    digest = hashlib.blake2b(scr.tobytes(), digest_size=16).hexdigest()
    if max_side and max(scr.shape) <= max_side:
        max_side = None  # the same result as full size: one cache entry
    key = (str(project.root), int(image_id), digest, method, project.num_classes, pred.id if pred else 0, max_side)
    with _PREVIEW_LOCK:
        if key in _PREVIEW_CACHE:
            _PREVIEW_CACHE.move_to_end(key)
            return _PREVIEW_CACHE[key], 0.0
    preview = preview_function()
    img = project.load_image(image_id)
    predicted = conf = None
    if pred is not None:
        predicted = imageio.read_label_map(project.root / pred.file)
        conf = project.confidence(image_id, pred.kind) if pred.kind == "predicted" else None
    t0 = time.perf_counter()
    result, _overlay = preview(img, scr, project.num_classes, method=method, colors=_colors(project),
                               prediction=predicted, prediction_confidence=conf, max_side=max_side,
                               background=project.background_index)
    dt = time.perf_counter() - t0
    with _PREVIEW_LOCK:
        _PREVIEW_CACHE[key] = result
        while len(_PREVIEW_CACHE) > 16:
            _PREVIEW_CACHE.popitem(last=False)
    return result, dt


def warm_up() -> float:
    """Import the segmenter and run the preview once on a tiny image, so a person's first stroke
    is not slowed by imports; returns the seconds it took (run it in a thread at start-up)."""
    t0 = time.perf_counter()
    yy, xx = np.mgrid[:64, :64]
    img = np.where(((yy - 32) ** 2 + (xx - 32) ** 2) < 300, 200, 50).astype(np.uint8)
    scr = np.full((64, 64), IGNORE, np.uint8)
    scr[30:34, 26:38] = 1
    scr[2:4, 4:60] = 0
    try:
        preview_function()(img, scr, 2)
    except Exception:  # noqa: BLE001 - a failed warm-up only costs time later
        import logging

        logging.getLogger("weakseg.app").exception("preview warm-up failed")
    return time.perf_counter() - t0


def overlay_for(project: Project, image_id: int, kind: str, scribbles: np.ndarray | None = None) -> dict:
    """``{"overlay": data URL or None, "kind", "seconds", "message"}`` for the overlay ``kind``
    (``scribbles``: the page's strokes for the live preview; default the stored ones)."""
    if kind not in OVERLAY_KINDS:
        raise AppError(f"unknown overlay '{kind}' (known: {', '.join(OVERLAY_KINDS)}).")
    colors = overlay_colors(project)
    if kind == "preview":
        t0 = time.perf_counter()
        result, _ = preview_result(project, image_id, scribbles=scribbles, max_side=PREVIEW_SIDE)
        if result is None:
            return {"overlay": None, "kind": kind, "seconds": 0.0,
                    "message": "Draw strokes in at least one class to see the live preview."}
        url = canvas.overlay_data_url(result.mask, colors)
        return {"overlay": url, "kind": kind, "seconds": round(time.perf_counter() - t0, 3), "message": ""}
    t0 = time.perf_counter()
    got = shown_mask(project, image_id, kind)
    if got is None:
        return {"overlay": None, "kind": kind, "seconds": 0.0, "message": f"This image has no {kind} mask."}
    mask, mi, note = got
    msg = f"{kind} mask from {mi.source}" + (f", uncertainty {mi.uncertainty:.3f}" if mi.uncertainty is not None else "")
    msg += f"; {note}" if note else ""
    return {"overlay": canvas.overlay_data_url(mask, colors), "kind": kind,
            "seconds": round(time.perf_counter() - t0, 3), "message": msg}


_SHOWN_PREDICTIONS: OrderedDict = OrderedDict()
_SHOWN_PREDICTIONS_LOCK = threading.Lock()
#: Said beside a prediction shown corrected by the strokes drawn after it.
CORRECTED_NOTE = "corrected by the strokes drawn since, as an export writes it"
#: Said beside a mask shown without a class the image has been tagged absent since.
ABSENT_NOTE = "shown without the classes tagged absent since, as an export writes it"


def shown_mask(project: Project, image_id: int, kind: str):
    """The stored mask of ``kind`` as the app shows it: ``(mask, MaskInfo, note)``, or ``None`` when
    the image has none. A ``predicted``, ``pseudo`` or ``final`` mask older than strokes drawn since
    is shown as an export writes it: corrected by those strokes
    (:func:`annotations.formats._common.export_mask`, the same layer and the same
    :func:`~annotations.formats._common.correct_stale_mask`), so the overlay, the mask editor and
    Accept never contradict a stroke the export would honour; ``note`` says so (``""`` for a mask
    shown as stored). Any stored mask that shows a class the image is tagged absent (a tag changed
    after it) is shown without that class, as an export writes it too. Cached by the mask, the
    strokes and the tags."""
    from annotations.formats._common import STROKE_CORRECTED_KINDS, absent_classes, correct_stale_mask

    mi = project.mask_info(image_id, kind)
    if mi is None:
        return None
    layers = project.layers_changed_since(image_id, mi.created) if kind in STROKE_CORRECTED_KINDS else []
    absent = absent_classes(project, image_id)
    if not layers and not absent:
        return imageio.read_label_map(project.root / mi.file), mi, ""
    layer = layers[0] if layers else None  # the image's stroke layer, as export_mask chooses
    key = (str(project.root), int(image_id), mi.id, layer,
           project.scribble_version(image_id, layer) if layer else 0,
           tuple(sorted(project.tags(image_id).items())), project.num_classes)
    with _SHOWN_PREDICTIONS_LOCK:
        if key in _SHOWN_PREDICTIONS:
            _SHOWN_PREDICTIONS.move_to_end(key)
            return _SHOWN_PREDICTIONS[key]
    got = correct_stale_mask(project, image_id, mi, layer)
    if got is None:  # the engine cannot be imported (it ships with the app): the mask as stored
        return imageio.read_label_map(project.root / mi.file), mi, ""
    note = "" if got[1] is mi else CORRECTED_NOTE if layers else ABSENT_NOTE
    out = (got[0], mi, note)
    with _SHOWN_PREDICTIONS_LOCK:
        _SHOWN_PREDICTIONS[key] = out
        while len(_SHOWN_PREDICTIONS) > 16:
            _SHOWN_PREDICTIONS.popitem(last=False)
    return out


def final_id(project: Project, image_id: int) -> int:
    """The id of the image's final mask, 0 when it has none (what the page last saw)."""
    mi = project.mask_info(image_id, "final")
    return mi.id if mi is not None else 0


def accepted_preview_source(prior) -> str:
    """The source of a final mask accepted from the live preview: the pseudo-labeller, and the mask
    the strokes corrected when there was one (``prior``, see :func:`preview_prior`), e.g.
    ``app:accepted-preview(hybrid+predicted app-unet-…)`` or ``…(hybrid+final app:mask-editor)``."""
    from segmenter.pseudo import DEFAULT_METHOD

    if prior is None:
        return f"app:accepted-preview({DEFAULT_METHOD})"
    return f"app:accepted-preview({DEFAULT_METHOD}+{prior.kind} {prior.model_version or prior.source})"


def accept_final(project: Project, image_id: int, kind: str, seen_final: int | None = None) -> str:
    """Store the mask shown as overlay ``kind`` as the image's final mask; returns a message.

    ``seen_final``: the final mask id the page knows (0 = none). When another window saved a final
    mask since, the accept is refused (:class:`StaleWriteError`) rather than replacing their work."""
    if seen_final is not None and kind != "final" and final_id(project, image_id) != int(seen_final):
        raise StaleWriteError("someone saved a final mask for this image since this page showed it (in another "
                              "window or on the command line); nothing was replaced. Look at the 'final' overlay, "
                              "then accept again if the one shown should replace it.")
    if kind == "preview":
        prior = preview_prior(project, image_id)  # what preview_result corrects with the strokes
        result, _ = preview_result(project, image_id)
        if result is None:
            raise AppError("there is no live preview to accept: draw strokes first, or show a prediction.")
        check_labelled(project, image_id, result.mask, "The live preview was not accepted")
        project.save_mask(image_id, result.mask, "final", source=accepted_preview_source(prior),
                          model_version=prior.model_version if prior is not None else None,
                          confidence=result.confidence)
        return "Live preview accepted as the final mask."
    if kind not in OVERLAY_KINDS:
        raise AppError(f"unknown mask kind '{kind}'.")
    got = shown_mask(project, image_id, kind)  # what the overlay shows, e.g. a prediction corrected by strokes
    if got is None:
        raise AppError("this image has no final mask yet." if kind == "final" else
                       f"this image has no {kind} mask to accept.")
    mask, mi, note = got
    if kind == "final" and not note:
        return "This mask is already final."
    check_labelled(project, image_id, mask, f"The {kind} mask was not accepted")
    if note:  # corrected: the prediction's confidence no longer describes it
        by = "strokes" if note == CORRECTED_NOTE else "tags"
        project.save_mask(image_id, mask, "final", source=f"app:accepted({kind}:{mi.source}+{by})",
                          model_version=mi.model_version)
        return (f"The {kind} mask, corrected by the strokes drawn since, is now final." if by == "strokes" else
                f"The {kind} mask, without the classes tagged absent since, is now final.")
    project.save_mask(image_id, mask, "final", source=f"app:accepted({kind}:{mi.source})",
                      model_version=mi.model_version, confidence=project.confidence(image_id, kind))
    return f"The {kind} mask is now final."


def mask_layer(project: Project, image_id: int, shown: str | None = None) -> dict:
    """What the mask editor starts from: the mask the page shows as overlay (``shown``: the live
    preview, e.g. a prediction corrected by the strokes, or a stored kind), else the final mask,
    else the best other mask, else the live preview, else an empty map.
    ``{"labels": rle, "version": mask id (0 = none), "kind"}``."""
    order = ("final", "imported", "predicted", "pseudo", "preview")
    if shown in order:
        order = (shown,) + tuple(k for k in order if k != shown)
    for k in order:
        if k == "preview":
            result, _ = preview_result(project, image_id)
            if result is not None:
                return {"labels": canvas.rle_encode(result.mask),
                        "version": _remember_base(project, image_id, result.mask), "kind": "preview"}
            continue
        got = shown_mask(project, image_id, k)
        if got is not None:
            m, mi, note = got
            if note:  # a corrected prediction is not stored: remembered like a live preview
                return {"labels": canvas.rle_encode(m), "version": _remember_base(project, image_id, m), "kind": k}
            return {"labels": canvas.rle_encode(m), "version": mi.id, "kind": k}
    return {"labels": None, "version": 0, "kind": "none"}


# The live previews the mask editor started from (they are not stored): a negative "version" names
# one, so an edit saved after another window's final mask changes only the pixels painted.
_EDITOR_BASES: OrderedDict = OrderedDict()
_EDITOR_BASES_LOCK = threading.Lock()
_EDITOR_KEYS = itertools.count(1)
EDITOR_BASES_KEPT = 64


def _remember_base(project: Project, image_id: int, mask: np.ndarray) -> int:
    with _EDITOR_BASES_LOCK:
        key = -next(_EDITOR_KEYS)
        _EDITOR_BASES[(str(project.root), int(image_id), key)] = mask.copy()
        while len(_EDITOR_BASES) > EDITOR_BASES_KEPT:
            _EDITOR_BASES.popitem(last=False)
    return key


# ---------------------------------------------------------------------------------- canvas API (JSON in, JSON out)
def _guard(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Every AnnotationError (and any other failure) becomes ``{"error": message}``."""

    def wrapper(payload: dict) -> dict:
        try:
            if not isinstance(payload, dict):
                raise AppError("the page sent a malformed request.")
            return fn(payload)
        except ImageGoneError as e:  # the page drops what it holds for the image (static/canvas.js)
            return {"error": str(e), "gone": True}
        except AnnotationError as e:
            return {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - a message, never a stack trace, in the page
            import logging

            from annotations.errors import database_busy

            busy = database_busy(e)
            if busy is not None:  # the page sends it again by itself, as when the server does not answer
                return {"error": busy.replace("Try again when it is done.", "Your strokes are kept in the page "
                                              "and sent again by themselves."), "retry": True}
            logging.getLogger("weakseg.app").exception("canvas request failed")
            return {"error": f"internal error ({type(e).__name__}: {e}); your strokes are kept in the page."}

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _req(payload: dict) -> tuple[Project, int]:
    project = project_for(payload.get("project"), payload.get("root"))
    try:
        image_id = int(payload.get("image_id"))
    except (TypeError, ValueError):
        raise AppError("the page sent no image id.") from None
    try:
        project.image_info(image_id)
    except NotFoundError:
        raise ImageGoneError(f"image {image_id} is no longer in this project (it was removed, here or in another "
                             "window): nothing more is saved for it. Go on to another image.") from None
    return project, image_id


def _check_page_classes(project: Project, payload: dict,
                        what: str = "these strokes were not saved (they are kept in this page)",
                        then: str = ", and draw them again") -> None:
    """Refuse a request from a page whose class list is out of date: a class was deleted (and maybe
    another added, so the count is the same) since it loaded, in another window or on the command
    line. Its class numbers may now name other classes, so its strokes, mask edits and tags would
    land on the wrong class (a page told of a change in its own window updates its list). The page
    sends ``n_classes``, ``class_names`` (its classes, in index order) and ``class_epoch``
    (:attr:`annotations.store.Project.class_epoch` when it loaded them): at the same epoch a class
    renamed or added (at the end) since moves no number, and the request goes on; without an epoch
    the names must match (classes added since: fine)."""
    n = payload.get("n_classes")
    names = payload.get("class_names")
    now = project.class_names
    stale = isinstance(n, int) and not isinstance(n, bool) and n > len(now)
    epoch = payload.get("class_epoch")
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    now_epoch = project.class_epoch
    if epoch == now_epoch and not stale:
        return  # no class deleted or replaced since the page loaded: its numbers name the same classes (renamed, maybe)
    if isinstance(names, list):  # classes added since (at the end) move no index: fine
        stale = stale or [str(x) for x in names] != list(now)[:len(names)]
    if stale:
        had = ", ".join(str(x) for x in names) if isinstance(names, list) else f"{n} classes"
        moved = epoch is not None and epoch != now_epoch
        why = "a class was deleted or the classes replaced, which moves class numbers; " if moved else ""
        raise AppError(f"the classes were changed in another window or on the command line since this page "
                       f"loaded ({why}this page has {had}; the project now has {', '.join(now)}), so this page's "
                       f"class numbers are out of date and {what}. Reload the page (F5) to get the classes as "
                       f"they are now{then}.")


@_guard
def canvas_save(payload: dict) -> dict:
    """Save the canvas: ``{project, image_id, layer: "scribbles"|"mask", labels: rle, version, kind,
    n_classes}`` (``n_classes``: how many classes the page draws with; more than the project has
    now is refused, see :func:`_check_page_classes`).

    Returns ``{"version", "labels" (rle, only when merged with another writer's work), "status",
    "tags"}`` (the tags as stored now, so a page shows another window's tag changes after its next stroke).
    """
    project, image_id = _req(payload)
    _check_page_classes(project, payload)
    info = project.image_info(image_id)
    labels = canvas.rle_decode(payload.get("labels") or [], (info.height, info.width))
    layer = payload.get("layer", "scribbles")
    if layer == "scribbles":
        v, merged = save_scribbles_merged(project, image_id, labels, int(payload.get("version") or 0),
                                          author=str(payload.get("author") or "app")[:64])
    elif layer == "mask":
        if take_back_mask_edit(project, image_id, labels, int(payload.get("version") or 0),
                               payload.get("start_version"), payload.get("opened_final")):
            return {"version": int(payload.get("start_version") or 0), "labels": None, "taken_back": True,
                    "status": image_status(project, image_id), "merged": False,
                    "tags": tags_of(project, image_id), "note": "", "final_id": final_id(project, image_id)}
        v, merged = save_mask_edit(project, image_id, labels, int(payload.get("version") or 0),
                                   str(payload.get("kind") or ""))
    else:
        raise AppError(f"unknown canvas layer '{layer}'.")
    note = untag_drawn_absent(project, image_id, merged if merged is not None else labels) if layer == "scribbles" else ""
    return {"version": v, "labels": canvas.rle_encode(merged) if merged is not None else None,
            "status": image_status(project, image_id), "merged": merged is not None,
            "tags": tags_of(project, image_id), "note": note}


def untag_drawn_absent(project: Project, image_id: int, strokes: np.ndarray) -> str:
    """A class with strokes on the image is not tagged absent: a class tagged absent that
    ``strokes`` (the stored map) now hold is tagged present (else the final overlay and an export
    would drop it from under the stroke). Returns a sentence for the page (``""``: nothing changed)."""
    absent = [int(k) for k, st in project.tags(image_id).items() if st == "absent"]
    if not absent:
        return ""
    drawn = set(int(v) for v in np.unique(strokes[strokes != IGNORE]))
    names = []
    with project.transaction():
        for idx in absent:
            if idx in drawn:
                project.set_tag(image_id, idx, "present")
                names.append(project.class_info(idx).name)
    if not names:
        return ""
    which = ", ".join(names)
    return (f"{which} {'was' if len(names) == 1 else 'were'} tagged absent on this image; your stroke shows "
            f"{'it' if len(names) == 1 else 'them'} here, so the tag is now present.")


@_guard
def canvas_preview(payload: dict) -> dict:
    """``{project, image_id, kind[, labels]}`` -> ``{"overlay", "kind", "seconds", "message", "version"}``.

    ``labels`` (rle): the strokes as drawn in the page, so the preview runs beside their save."""
    project, image_id = _req(payload)
    scr = None
    if payload.get("labels") is not None:
        _check_page_classes(project, payload, "no preview was made of these strokes (they are kept in this page)",
                            "; the strokes come back")
        info = project.image_info(image_id)
        scr = canvas.rle_decode(payload["labels"], (info.height, info.width))
    out = overlay_for(project, image_id, str(payload.get("kind") or "preview"), scribbles=scr)
    out["version"] = project.scribble_version(image_id)
    return out


@_guard
def canvas_tag(payload: dict) -> dict:
    """``{project, image_id, class_idx, state}`` -> ``{"tags": {idx: state}, "status"}``;
    ``{project, image_id, others: "absent"}`` tags every class this image has no tag for, and no
    stroke of, as absent (one click instead of one per class), except a background class 0
    (:func:`background_class`: a region of every image) and classes added since the page loaded
    (it does not show them). A class with strokes on the image is not tagged absent (see
    :func:`segmenter.commands.tag.absent_refusal`)."""
    from segmenter.commands.tag import absent_refusal

    project, image_id = _req(payload)
    _check_page_classes(project, payload, "the tag was not saved", ", and set it again")
    if payload.get("others") == "absent":
        drawn = set()  # classes with strokes in any layer, as absent_refusal counts them
        for name in project.scribble_layers(image_id):
            scr = project.scribbles(image_id, name)
            if scr is not None:
                drawn.update(int(v) for v in np.unique(scr[scr != IGNORE]))
        have = project.tags(image_id)
        bg = background_class(project)
        names = payload.get("class_names")  # classes added since the page loaded: nobody looked for them
        known = len(names) if isinstance(names, list) else project.num_classes
        with project.transaction():
            for c in project.classes():
                if c.idx not in have and c.idx not in drawn and c.idx != bg and c.idx < known:
                    project.set_tag(image_id, c.idx, "absent")
        return {"tags": tags_of(project, image_id), "status": image_status(project, image_id)}
    try:
        idx = int(payload.get("class_idx"))
    except (TypeError, ValueError):
        raise AppError("the page sent no class for the tag.") from None
    state = str(payload.get("state"))
    if state == "absent":
        refusal = absent_refusal(project, image_id, project.class_info(idx), layer=project.scribble_layer)
        if refusal:
            raise AppError(refusal)
    project.set_tag(image_id, idx, state)
    return {"tags": tags_of(project, image_id), "status": image_status(project, image_id)}


@_guard
def canvas_mask_layer(payload: dict) -> dict:
    """``{project, image_id[, shown]}`` -> the mask editor's starting map (see :func:`mask_layer`)."""
    project, image_id = _req(payload)
    shown = payload.get("shown")
    out = mask_layer(project, image_id, shown if isinstance(shown, str) else None)
    # the final mask the image had when the editor opened (0: none): painting back to the start map
    # then takes this visit's final mask back (see :func:`take_back_mask_edit`)
    out["final_id"] = final_id(project, image_id)
    return out


@_guard
def canvas_accept(payload: dict) -> dict:
    """``{project, image_id, kind}`` -> ``{"message", "status"}``: the shown mask becomes final."""
    project, image_id = _req(payload)
    _check_page_classes(project, payload, "nothing was accepted", ", and accept again")
    seen = payload.get("final_id")
    try:
        msg = accept_final(project, image_id, str(payload.get("kind") or "preview"),
                           seen_final=int(seen) if isinstance(seen, (int, float)) else None)
    except StaleWriteError as e:  # a final mask saved elsewhere: the page shows it now (its 'final' overlay)
        return {"error": str(e), "refresh": refresh_message(project, str(payload.get("project")), image_id)}
    return {"message": msg, "status": image_status(project, image_id), "final_id": final_id(project, image_id)}


CANVAS_FUNCTIONS = (canvas_save, canvas_preview, canvas_tag, canvas_mask_layer, canvas_accept)


# ---------------------------------------------------------------------------------- classes
_MD_SPECIALS = re.compile(r"([\\`*_\[\]~|])")  # mid-line: emphasis, code, links, strike, tables


def md_text(text) -> str:
    """``text`` (a class name, an image name) as literal text inside Markdown: its HTML escaped and
    its Markdown marks backslashed, so ``<b>`` or ``**x**`` shows as typed (it vanished, rendered
    as a tag)."""
    return _MD_SPECIALS.sub(r"\\\1", html.escape(str(text), quote=False))


def class_rows(project: Project) -> list[list]:
    return [[c.idx, c.name, c.hex] for c in project.classes()]


def class_choices(project: Project) -> list[tuple[str, str]]:
    """The "Class to change" list: labelled ``idx: name``, valued by name, so a page whose list is
    out of date (a class deleted in another window moved the indices) never acts on another class."""
    return [(f"{c.idx}: {c.name}", c.name) for c in project.classes()]


def picked_class(project: Project, picked, what: str):
    """The class picked in "Class to change" (its name; an index is taken as is, for scripts), or
    :class:`AppError` naming ``what`` was not done when no class of that name is left."""
    if picked is None or picked == "":
        raise AppError(f"choose the class to {what}.")
    if isinstance(picked, int) and not isinstance(picked, bool):
        return project.class_info(picked)
    for c in project.classes():
        if c.name.lower() == str(picked).strip().lower():
            return c
    raise AppError(f"there is no class '{picked}' any more (it was renamed or deleted in another window or on "
                   f"the command line), so nothing was changed; the classes now are {', '.join(project.class_names)}. "
                   "Reload the page (F5) to see them.")


def add_class(project: Project, name: str, color: str | None = None) -> str:
    """Add a class; ``color`` ``None`` (or empty) takes the next colour of the project's palette.
    Refused while a job runs on the project: its model is made for the classes it started with."""
    with jobs.while_idle(str(project.root), "The class was not added"):
        c = project.add_class(name, color or None)
    return f"Added class {c.idx}: {c.name}."


def next_class_color(project: Project) -> str:
    """The colour the next added class gets by default (``#rrggbb``), for the page's colour picker."""
    from annotations.store import color_hex, default_color

    return color_hex(default_color(project.num_classes))


def rename_class(project: Project, idx, name: str) -> str:
    """Rename the class picked (``idx``: its name as :func:`class_choices` gives it, or its index).
    Refused while a job runs on the project (the model it saves at the end would carry the old name)."""
    from segmenter.models import rename_project_class

    with jobs.while_idle(str(project.root), "The class was not renamed"):
        c = rename_project_class(project, picked_class(project, idx, "rename").idx, name)  # its models stay usable
    return f"Class {c.idx} is now called {c.name}."


def recolor_class(project: Project, idx, color: str) -> str:
    c = project.recolor_class(picked_class(project, idx, "recolour").idx, color)
    return f"Class {c.name} is now drawn in {c.hex}."


def delete_class_question(project: Project, idx) -> tuple[str, str]:
    """What the page asks before deleting class ``idx``: ``(its name, the question)``, the question
    saying what uses it (:meth:`Project.class_usage`) and what deleting it does, as the command
    line's ``classes delete`` says it. Refused (:class:`AnnotationError`) at once when the store would
    refuse (fewer than two classes left) or a job runs on the project."""
    from annotations.store import usage_text

    c = picked_class(project, idx, "delete")
    jobs.refuse_while_running(str(project.root), "The class was not deleted")
    project.check_class_deletable(c)  # the store's own refusal, before anything is asked
    uses, effects = usage_text(project.class_usage(c.idx))
    parts = [f"Really delete class **{md_text(c.name)}** (index {c.idx})?",
             f"It is used by {uses}: {effects}." if uses else "No stroke, mask or tag uses it."]
    after = [md_text(x.name) for x in project.classes() if x.idx > c.idx]
    if after:
        parts.append(f"The classes after it ({', '.join(after)}) each move down one index (and number key).")
    models = project.models_for_classes()
    if models:
        parts.append(f"{len(models)} trained model(s) ({md_text(', '.join(models[:5]))}{' …' if len(models) > 5 else ''}) "
                     "cannot predict after it: train a new model.")
    parts.append("This cannot be undone from the page.")
    return c.name, " ".join(parts)


def delete_class(project: Project, name: str) -> tuple[int, str]:
    """Delete the class ``name`` (the one the question named: a name, as indices move) as
    ``python -m segmenter classes PROJECT delete NAME --force`` does (:meth:`Project.delete_class`:
    its pixels become unlabelled, its tags go, the classes after it move down one index).
    Returns ``(the index it had, a message)``; refused while a job runs on the project."""
    with jobs.while_idle(str(project.root), "The class was not deleted"):
        try:
            c = project.class_info(str(name))
        except NotFoundError:
            c = None
        if c is None or c.name.lower() != str(name).strip().lower():
            raise AppError(f"there is no class '{name}' any more (renamed or deleted meanwhile); nothing was "
                           "deleted.")
        summary = project.delete_class(c.name, force=True)
    return c.idx, summary[:1].upper() + summary[1:] + "."


# ---------------------------------------------------------------------------------- adding images
def _file_path(f) -> str:
    """A path from what gr.File gives (a str, or an object with ``.name`` / ``.path``)."""
    for attr in ("path", "name"):
        v = getattr(f, attr, None)
        if isinstance(v, str):
            return v
    return str(f)


def add_uploads(project: Project, files: Sequence, orig_names: Sequence[str] | None = None) -> str:
    """Add uploaded files (paths of temporary copies); checks type and size, sanitises names.
    NIfTI volumes are added after the images by :func:`_add_volumes` (a label volume uploaded with
    its image volume is paired with it, as the CLI's folder import pairs them); a file refused
    (its reason in the message) never keeps the others from being added."""
    files = list(files or [])
    if not files:
        raise AppError("choose one or more image files to upload first.")
    if len(files) > MAX_UPLOAD_FILES:
        raise AppError(f"{len(files)} files at once is too many; upload at most {MAX_UPLOAD_FILES}.")
    added, notes = 0, []
    volumes: list[tuple[Path, str]] = []
    for k, f in enumerate(files):
        path = Path(_file_path(f))
        name = sanitize_name(orig_names[k] if orig_names else path.name)
        ext = os.path.splitext(name)[1].lower()
        volume = is_nifti_name(name)
        if ext not in imageio.IMAGE_EXTENSIONS and not volume:
            notes.append(f"{name}: not an image file (allowed: {', '.join(imageio.IMAGE_EXTENSIONS)}, "
                         "or a NIfTI volume .nii / .nii.gz)")
            continue
        try:
            size = path.stat().st_size
        except OSError:
            notes.append(f"{name}: the upload could not be read")
            continue
        if size > MAX_UPLOAD_BYTES:
            notes.append(f"{name}: {size / 2**20:.0f} MB is over the {MAX_UPLOAD_BYTES // 2**20} MB limit")
            continue
        if volume:
            volumes.append((path, name))
            continue
        try:
            info = project.add_image(path, name=name)
            added += 1
        except AnnotationError as e:
            notes.append(str(e))
            continue
        if info.name != name:  # another image has that name (ignoring case): stored under a new one
            notes.append(renamed_note(project, name, info))
    if volumes:
        n, said = _add_volumes(project, volumes)
        added += n
        notes.extend(said)
    return "\n".join([f"Added {added} image(s)."] + [f"- {n}" for n in notes])


def _add_volumes(project: Project, uploads: list[tuple[Path, str]]) -> tuple[int, list[str]]:
    """The NIfTI volumes of one upload (``(temporary copy, uploaded name)``): ``(slices added,
    notes)``. A ``<stem>_gt`` / ``_seg`` / ``_label`` / ``_mask`` volume uploaded with ``<stem>`` is
    its label volume (stored as the masks of its slices, as ``import`` of a folder holding both
    does: :func:`annotations.formats.nifti.label_pairs`), not image slices; one uploaded without
    its image is refused with the remedy, and so are two for one image (the image is added
    alone). Each volume is imported on its own, so a refused one (named in its note) never keeps
    the others out."""
    from annotations.formats.nifti import LABEL_SUFFIXES, label_base, label_pairs, nifti_stem

    paths = dict((name, path) for path, name in uploads)
    pairs = label_pairs(list(paths))
    is_label = {n for found in pairs.values() for n in found}
    added, notes = 0, []
    for path, name in uploads:
        if name in is_label:
            continue
        base = label_base(nifti_stem(name))
        if base is not None:
            suffix = nifti_stem(name)[len(base):]
            notes.append(f"{name}: named as the label volume of '{base}' (it ends in {suffix}), which was not uploaded "
                         f"with it; nothing added. Upload {base}.nii.gz (or .nii) and {name} together: the label "
                         "volume becomes the masks of its slices (a volume the project has already gets no new "
                         f"image). To add it as images instead, rename it without {'/'.join(LABEL_SUFFIXES)}.")
            continue
        label = None
        found = pairs.get(name, [])
        if len(found) > 1:
            notes.append(f"{' and '.join(found)} are both named as the label volume of {name}; neither was stored "
                         "(upload one of them with it)")
        elif found:
            label = (paths[found[0]], found[0])
        n, said = _add_volume(project, path, name, label)
        added += n
        notes.extend(said)
    return added, notes


def _add_volume(project: Project, path: Path, name: str, label: tuple[Path, str] | None = None
                ) -> tuple[int, list[str]]:
    """An uploaded NIfTI volume (a temporary copy at ``path``, uploaded as ``name``) into the
    project as its slices (:mod:`annotations.formats.nifti`), with ``label`` (its label volume's
    temporary copy and uploaded name) as their masks: ``(slices added, notes)``. Its refusal is a
    note naming the file, never an exception out of the upload."""
    from annotations.formats import get_format

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / name  # the volume's name makes its slices' names and image set
        shutil.copyfile(path, dst)
        options = {}
        if label is not None:
            (Path(tmp) / "labels").mkdir()
            options["masks"] = str(Path(tmp) / "labels" / label[1])  # its name for the messages
            shutil.copyfile(label[0], options["masks"])
        try:
            summary = get_format("nifti").import_into(project, dst, options)
        except AnnotationError as e:
            return 0, [str(e)]
        except Exception as e:  # noqa: BLE001 - one unreadable upload must not lose the others
            import logging

            logging.getLogger("weakseg.app").exception("adding the volume %s failed", name)
            return 0, [f"{name}: could not be added ({type(e).__name__}: {e}); nothing of it was added"]
    return len(summary.added), summary.lines()[1:]


def renamed_note(project: Project, name: str, info) -> str:
    """Why an uploaded ``name`` was stored as ``info.name`` (the store makes names unique, ignoring
    case, as exports write one file per name)."""
    stem = Path(name).stem.lower()
    other = next((i.name for i in project.images() if i.id != info.id and Path(i.name).stem.lower() == stem), None)
    why = f"the project already has {other}" if other else "the project already has an image of that name"
    return f"{name} was added as {info.name}: {why} (names are compared ignoring case)"


def _layer_versions(project: Project) -> dict[tuple[int, str], int]:
    """``{(image_id, layer): version}`` of every image's scribble layers (what an import changes)."""
    return {(i, layer): project.scribble_version(i, layer)
            for i in project.image_ids() for layer in project.scribble_layers(i)}


def imported_layer_note(project: Project, before: dict[tuple[int, str], int]) -> str:
    """After an import (``before``: :func:`_layer_versions` before it): what it means for the app
    that the import brought strokes into layers the app does not draw in. When the app's layer has
    no strokes in the project, the app turns to another layer as it does at start-up
    (:func:`choose_layer`; ``project.scribble_layer`` changes); else the note says how to use them."""
    after = _layer_versions(project)
    layers = sorted({layer for key, v in after.items() if before.get(key) != v
                     for layer in [key[1]] if layer != project.scribble_layer})
    if not layers:
        return ""
    names = ", ".join(repr(x) for x in layers)
    what = f"The imported strokes are in scribble layer{'s' if len(layers) > 1 else ''} {names}"
    old = project.scribble_layer
    if old not in project.scribble_layers():
        project.scribble_layer = choose_layer(project, None)[0]
        return (f"{what}, and layer '{old}' has no strokes: the app now draws in and trains on layer "
                f"'{project.scribble_layer}' (as it would on a restart).")
    return (f"{what}, which the app does not draw in or train on (it uses layer '{old}'): start the app "
            f"with --layer {layers[0]} to use them.")


def add_folder(project: Project, folder: str) -> str:
    """Import a folder of images (or a dataset in the folder layout) from the server's disk; see
    :func:`imported_layer_note` for strokes it brings into another scribble layer."""
    from annotations.importer import import_path

    folder = str(folder or "").strip()
    if not folder:
        raise AppError("enter a folder path on this computer.")
    before = _layer_versions(project)
    summary = import_path(project, os.path.expanduser(folder))
    note = imported_layer_note(project, before)
    return "\n".join(summary.lines() + ([note] if note else []))


# ---------------------------------------------------------------------------------- removing images
def _what_goes(project: Project, info) -> str:
    """What :meth:`Project.delete_image` takes with the image, in words (the command line's
    ``remove-image`` says the same)."""
    from segmenter.commands.review import what_goes

    return what_goes(project, info)


def remove_question(project: Project, image_id) -> tuple[int, str]:
    """What the page asks before removing the image shown: ``(its id, the question)``. Refused at
    once while a job runs on the project."""
    if image_id is None:
        raise AppError("no image is shown, so there is nothing to remove.")
    jobs.refuse_while_running(str(project.root), "The image was not removed")
    try:
        info = project.image_info(int(image_id))
    except NotFoundError:
        raise AppError(f"image {image_id} is no longer in this project (removed meanwhile).") from None
    goes = _what_goes(project, info)
    with_it = "It has no labels." if goes == "no labels" else f"With it go: {goes}."
    ids = project.image_ids()
    where = f"image {ids.index(info.id) + 1} of {len(ids)}"
    return info.id, (f"Really remove **{info.name}** ({where}) from the project? {with_it} This cannot be undone "
                     "from the page (its files stay in the project folder).")


def image_after_removal(project: Project, image_id: int, status_filter: str = "all") -> int | None:
    """The image to show once ``image_id`` is gone: the next one in the list as shown (the filter),
    the previous one when it was the last there, else the same among all images; ``None`` when it
    is the only image."""
    for ids in (_ids(project, status_filter), project.image_ids()):
        if image_id in ids and len(ids) > 1:
            k = ids.index(image_id)
            return ids[k + 1] if k + 1 < len(ids) else ids[k - 1]
    rest = [i for i in project.image_ids() if i != image_id]
    return rest[0] if rest else None


def remove_image(project: Project, image_id, status_filter: str = "all") -> tuple[int | None, str]:
    """Remove an image as ``python -m segmenter remove-image`` does (:meth:`Project.delete_image`:
    its masks, strokes, tags and image-set places go, its files stay). Returns ``(the image to show
    now, see image_after_removal, a message saying what was removed)``; refused while a job runs
    on the project."""
    with jobs.while_idle(str(project.root), "The image was not removed"):
        try:
            info = project.image_info(int(image_id))
        except (NotFoundError, TypeError, ValueError):
            raise AppError(f"image {image_id} is no longer in this project (removed meanwhile); nothing was "
                           "removed.") from None
        goes = _what_goes(project, info)
        shown = image_after_removal(project, info.id, status_filter)
        project.delete_image(info.id)
    left = len(project.image_ids())
    return shown, (f"Removed {info.name} (id {info.id})" + (", which had no labels" if goes == "no labels"
                                                              else f" with {goes}")
                   + f"; {left} image(s) left. Its files stay in the project folder (images/, masks/{info.id}/, "
                     f"scribbles/{info.id}/).")


# ---------------------------------------------------------------------------------- export
def export_zip(project: Project, format_name: str, masks: str) -> tuple[str, str]:
    """Export to ``PROJECT/exports/<format>-<masks>-<time>.zip`` and return ``(download path, message)``;
    the download path is a copy in the system temp folder (where the web server may read)."""
    from annotations.formats import export_project

    if not format_name:
        raise AppError("choose an export format.")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = sanitize_name(f"{project.root.name}-{format_name}-{masks}-{stamp}.zip", "export.zip")
    out = project.exports_dir / name
    k = 2
    while out.exists():
        out = project.exports_dir / f"{out.stem}-{k}.zip"
        k += 1
    res = export_project(project, format_name, out, masks=masks)
    dl_dir = Path(tempfile.mkdtemp(prefix="weakseg-export-"))
    dl = dl_dir / out.name
    shutil.copyfile(out, dl)
    return str(dl), "\n".join(res.lines())


@dataclass
class StepResult:
    """What a navigation handler resolved: the image to show and a message (empty = none)."""

    image_id: int | None
    message: str = ""


def resolve_navigation(project: Project, current: int | None, action: str, status_filter: str = "all") -> StepResult:
    """``action``: ``next``, ``prev``, ``unannotated``, ``uncertain``."""
    if action == "next":
        return StepResult(neighbour(project, current, +1, status_filter))
    if action == "prev":
        return StepResult(neighbour(project, current, -1, status_filter))
    if action == "unannotated":
        nxt = next_unannotated(project, current)
        if nxt is None and not project.image_ids():
            return StepResult(None, "No images yet: add some in the Project & images panel.")
        if nxt is None and current is not None and int(current) not in project.annotated_ids():
            return StepResult(current, "This is the only image left without annotations.")
        return StepResult(nxt if nxt is not None else current,
                          "" if nxt is not None else "Every image has annotations already.")
    if action == "uncertain":
        nxt = next_most_uncertain(project, current)
        if nxt is not None and nxt == current:
            return StepResult(current, "This is the only predicted mask left to review.")
        return StepResult(nxt if nxt is not None else current,
                          "" if nxt is not None else "No predicted masks to review: train and predict first.")
    raise AppError(f"unknown navigation '{action}'.")


def first_image(project: Project) -> int | None:
    ids = project.image_ids()
    return ids[0] if ids else None


def resume_image(project: Project, seen) -> int | None:
    """The image to open ``project`` on: the one this browser showed last (``seen``, kept in the
    browser's storage by :func:`remember_image`) if it is still there, else the first image."""
    last = seen.get(str(project.root)) if isinstance(seen, dict) else None
    return check_image(project, last)


def remember_image(project: Project, seen, image_id) -> dict:
    """``seen`` (``{project folder: image id}``) with ``image_id`` as ``project``'s last image; at
    most :data:`REMEMBERED_PROJECTS` projects are kept, the latest last."""
    out = {k: v for k, v in (seen.items() if isinstance(seen, dict) else ()) if k != str(project.root)}
    if image_id is not None:
        out[str(project.root)] = int(image_id)
    return dict(list(out.items())[-REMEMBERED_PROJECTS:])


def remember_project(project: Project, start: Project) -> dict:
    """What a browser keeps so that a reload reopens ``project`` (see :func:`reopen_project`):
    ``{"project": its folder, "start": the folder the app was started on}``."""
    return {"project": str(project.root), "start": str(start.root)}


def reopen_project(last, start: Project) -> tuple[Project, str]:
    """The project a reload (F5) opens: ``(project, note)``. The one this browser had open last
    (``last``, kept by :func:`remember_project`) when the app still runs on the project it was
    started on then and that project still opens; else ``start``, with ``note`` saying why in a
    sentence when the remembered project could not be opened (``""`` otherwise)."""
    if not isinstance(last, dict) or not isinstance(last.get("project"), str) or last.get("start") != str(start.root):
        return start, ""
    path = last["project"]
    if path == str(start.root):
        return start, ""
    root = Path(path)
    with _PROJECTS_LOCK:  # opened before in this server: the same Project (and scribble layer)
        known = next((p for p in _PROJECTS.values() if str(p.root) == path), None)
    try:
        if not (root / "project.db").is_file():
            raise AppError("it is no longer there")
        if known is not None:
            return known, ""
        project = Project.open(root)
        project.scribble_layer = choose_layer(project, None)[0]
        return project, ""
    except AnnotationError as e:
        why = str(e).rstrip(".")
    except Exception as e:  # noqa: BLE001 - a damaged project must not keep the page from opening
        import logging

        logging.getLogger("weakseg.app").exception("reopening %s failed", path)
        why = f"it could not be opened ({type(e).__name__})"
    return start, (f"The project open last in this browser, {path}, could not be reopened ({why}); "
                   f"showing {start.root}.")


def check_image(project: Project, image_id) -> int | None:
    """``image_id`` if it exists in ``project``, else its first image (or None)."""
    try:
        if image_id is not None:
            project.image_info(int(image_id))
            return int(image_id)
    except (NotFoundError, ValueError, TypeError):
        pass
    return first_image(project)
