"""The project store: a folder with ``project.db`` (SQLite, WAL) and files.

::

    PROJECT/
      project.db              images, classes, scribble versions, tags, masks with provenance
      images/<id>_<name>      the original files, byte for byte
      scribbles/<id>/<layer>-<version>.png     uint8 index maps, 255 = none
      masks/<id>/<kind>-<n>.png                uint8 index maps, 255 = ignore
      masks/<id>/<kind>-<n>.conf.png           confidence, uint8 0..255 = 0..1 (optional)
      models/                 checkpoints (safetensors + JSON), written by the segmenter
      exports/                export output

Writes are atomic: every file is written to a temp file, fsynced and renamed under a name never
used before, and only then is the row committed in one transaction. A crash at any moment leaves
the database consistent and every acknowledged save readable (an orphaned file at worst).
Scribbles are versioned per image and layer: every save is a new version, undo/redo move the
head. A save names the version it was based on (``expected_version``); if another writer saved
in between, the save is refused with :class:`StaleWriteError` and nothing is lost.

Label maps: ``(H, W) uint8``, class index, 255 = none / ignore.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import os
import re
import shutil
import sqlite3
import threading
import unicodedata
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import imageio
from .errors import (
    AnnotationError,
    ClassInUseError,
    DuplicateImageError,
    ImageError,
    LabelMapError,
    NotFoundError,
    ProjectError,
    StaleWriteError,
)
from .schema import MASK_KINDS, TAG_STATES, migrate

IGNORE = 255
DB_NAME = "project.db"
DEFAULT_LAYER = "default"
STATUS_ORDER = ("final", "imported", "predicted", "pseudo", "scribbled", "tagged", "untouched")
#: runs of characters that may need replacing in a file name (ASCII letters, digits, "._ -" never do)
_NAME_ODD = re.compile(r"[^A-Za-z0-9._ -]+")
#: at most this many characters, and this many UTF-8 bytes (file systems count bytes, 255 at most)
_NAME_MAX_CHARS, _NAME_MAX_BYTES = 120, 200

# Colours for the first classes (background dark grey, then well-separated hues).
_BASE_COLORS = [
    (128, 128, 128), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]


#: Class names that mean "nothing of interest": as class 0 they are drawn grey, left unpainted by
#: the app's mask overlays and out of its "Others absent". The instance formats (COCO, YOLO) leave
#: out of their annotations only a class 0 named as plain background
#: (``annotations.formats._common.INSTANCE_BACKGROUND_NAMES``): "other" or "clutter" can be a class
#: that someone wants polygons of.
BACKGROUND_NAMES = ("background", "_background_", "bg", "void", "unlabeled", "unlabelled", "none", "other", "clutter")


def background_named(names: Sequence[str]) -> list[int]:
    """The indices of the classes whose name says background (:data:`BACKGROUND_NAMES`); the
    pseudo-labellers take the background from it when there is exactly one."""
    return [i for i, n in enumerate(names) if str(n).strip().lower() in BACKGROUND_NAMES]


#: The classes of a project created without any (a placeholder that an imported dataset replaces).
DEFAULT_CLASSES = ("background", "object")
#: Class 0's colour when it is a real class (camvid's Sky, say), not a background.
FIRST_CLASS_COLOR = (255, 225, 25)


def default_color(idx: int, name: str | None = None) -> tuple[int, int, int]:
    """The colour a new class ``idx`` gets: a palette of distinct colours; class 0 is mid grey
    (seen on dark scans and bright photos alike) when it is a background, yellow when ``name``
    says it is a real class."""
    if idx == 0 and name is not None and name.strip().lower() not in BACKGROUND_NAMES:
        return FIRST_CLASS_COLOR
    if idx < len(_BASE_COLORS):
        return _BASE_COLORS[idx]
    h = (idx * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def parse_color(color) -> tuple[int, int, int]:
    """``"#rrggbb"``, ``"rrggbb"`` or an (r, g, b) sequence -> (r, g, b) ints 0..255."""
    if isinstance(color, str):
        s = color.strip()
        m = re.fullmatch(r"#?([0-9a-fA-F]{6})", s)
        if m:
            v = m.group(1)
            return int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16)
        m = re.fullmatch(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)", s)
        if m:
            return tuple(int(round(float(m.group(i)))) for i in (1, 2, 3))  # type: ignore[return-value]
        raise AnnotationError(f"'{color}' is not a colour; use #rrggbb.")
    try:
        r, g, b = (int(c) for c in color)
    except (TypeError, ValueError):
        raise AnnotationError(f"'{color}' is not a colour; use #rrggbb.") from None
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise AnnotationError(f"colour {color} has a component outside 0..255.")
    return r, g, b


def color_hex(rgb: Sequence[int]) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


def _replace_odd(m: re.Match) -> str:
    # Letters, marks and digits of any script stay; other characters (path separators, control and
    # format characters, punctuation such as <>:"|?*) become '_', a run of them a single '_'.
    out = "".join(c if unicodedata.category(c)[0] in "LMN" else "_" for c in m.group(0))
    return re.sub(r"_{2,}", "_", out)


def sanitize_name(name: str, fallback: str = "image") -> str:
    """A file name safe on every OS: no path separators, no '..', no control characters.

    Letters and digits of every script stay (``café.jpg``, ``猫.png``; NFC-normalised, as macOS
    hands out decomposed names); any other character than ``.``, ``_``, ``-`` and space becomes
    ``_``. At most 120 characters and 200 UTF-8 bytes, keeping a short extension.
    """
    base = unicodedata.normalize("NFC", os.path.basename(str(name).replace("\\", "/")))
    base = _NAME_ODD.sub(_replace_odd, base).strip(" .")
    base = re.sub(r"\.{2,}", ".", base)
    if len(base) > _NAME_MAX_CHARS or len(base.encode("utf-8")) > _NAME_MAX_BYTES:
        stem, ext = os.path.splitext(base)
        if len(ext) > 10:
            stem, ext = base, ""
        while stem and (len(stem) + len(ext) > _NAME_MAX_CHARS
                        or len((stem + ext).encode("utf-8")) > _NAME_MAX_BYTES):
            stem = stem[:-1]
        base = (stem.rstrip(" .") + ext) if stem.rstrip(" .") else ""
    return base or fallback


def _valid_class_name(name: str, existing: Sequence[str]) -> str:
    """``name`` stripped, if it can name a new class beside ``existing``; else :class:`AnnotationError`."""
    name = str(name).strip()
    if not name:
        raise AnnotationError("a class name cannot be empty.")
    if len(name) > 64:
        raise AnnotationError(f"class name '{name[:20]}…' is longer than 64 characters.")
    if "," in name:
        raise AnnotationError(f"class name '{name}' has a comma; class lists are comma-separated, so use another "
                              "character.")
    same = next((c for c in existing if c.lower() == name.lower()), None)
    if same is not None:
        raise AnnotationError(f"a class named '{name}' already exists." if same == name else
                              f"the class '{same}' exists already, and class names ignore case ('{name}').")
    return name


def check_new_project_classes(names: Sequence[str]) -> None:
    """Refuse fewer than two class names for a new project (the CLI's ``init`` and the app's "create
    project"): every pixel belongs to one class, so one class leaves nothing to segment.
    (:meth:`Project.create` itself takes any list, for tests of what refuses such a project.)"""
    names = [str(n).strip() for n in names if str(n).strip()]
    if len(names) < 2:
        other = names[0] if names and names[0].lower() != "background" else "object"
        raise ProjectError(f"classes '{', '.join(names)}': a segmentation project needs at least two classes, "
                           f"e.g. background, {other} (every pixel belongs to one of them).")


def _and(parts: list[str]) -> str:
    return " and ".join(filter(None, [", ".join(parts[:-1]), parts[-1]])) if parts else ""


def usage_text(usage: dict[str, int], done: bool = False) -> tuple[str, str]:
    """What uses a class and what deleting it does (``done``: did), from :meth:`Project.class_usage`:
    ``{"scribbles": 10, "masks": 1, "tags": 0}`` -> ``("10 scribble maps and 1 mask", "its pixels
    become unlabelled")``; ``("", "")`` when nothing uses it."""
    words = {"scribbles": ("scribble map", "scribble maps"), "masks": ("mask", "masks"), "tags": ("tag", "tags")}
    uses = _and([f"{n} {words[k][n != 1]}" for k, n in usage.items() if n])
    effects = _and(([f"its pixels {'are now' if done else 'become'} unlabelled"]
                    if usage["scribbles"] or usage["masks"] else [])
                   + ([f"its tags {'were' if done else 'are'} removed"] if usage["tags"] else []))
    return uses, effects


def _new_database_file(path: Path) -> None:
    """An empty file (an empty SQLite database) with the mode of any new file, ``0666`` less the
    umask: SQLite creates its files ``0644`` whatever the umask, so a group sharing the project
    folder (umask 002) could not write to it. Its ``-wal`` / ``-shm`` files take the same mode."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


@contextmanager
def removed_on_failure(root: str | os.PathLike) -> Iterator[None]:
    """Undo the creation of a project folder when the block fails.

    If the block raises, what it created is removed: the folder ``root`` (and the parents made for
    it) when it did not exist before the block, else only the entries it added inside ``root``.
    Nothing that existed before the block is touched. The exception propagates.
    """
    root = Path(os.path.abspath(root))
    top = None
    for d in (root, *root.parents):
        if os.path.lexists(d):
            break
        top = d
    try:
        before = set(os.listdir(root)) if top is None and root.is_dir() else None
    except OSError:  # a folder that cannot be listed cannot be written either: nothing to undo
        before = None
    try:
        yield
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        elif before is not None:
            for entry in set(os.listdir(root)) - before:
                path = root / entry
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ClassInfo:
    idx: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return color_hex(self.color)


@dataclass(frozen=True)
class ImageInfo:
    id: int
    name: str
    orig_name: str
    file: str
    sha256: str
    width: int
    height: int
    channels: int
    added: str

    @property
    def stem(self) -> str:
        return os.path.splitext(self.name)[0]


@dataclass(frozen=True)
class MaskInfo:
    id: int
    image_id: int
    kind: str
    source: str
    model_version: str | None
    uncertainty: float | None
    created: str
    file: str
    conf_file: str | None


@dataclass
class ImportSummary:
    """What an import did: added images, files skipped with the reason, duplicates found.
    ``merged``: the dataset's images that the project held already (``(file, project image)``;
    a content match is also in ``duplicates``): their labels went onto the project's images, and
    :meth:`lines` counts them in one line, not a ``duplicate:`` line each."""

    added: list[ImageInfo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    masks: int = 0
    scribbles: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    merged: list[tuple[str, str]] = field(default_factory=list)

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"added {len(self.added)} image(s), {self.masks} mask(s), {self.scribbles} scribble map(s) "
               f"in {self.seconds:.1f} s"]
        if self.merged:
            n = len(self.merged)
            out.append(f"{n} image{'s' if n != 1 else ''} already in the project: "
                       f"{'their' if n != 1 else 'its'} labels were merged")
        merged = set(self.merged)
        duplicates = [pair for pair in self.duplicates if pair not in merged]
        for name, existing in duplicates[:limit]:
            out.append(f"duplicate: {name} has the same content as {existing}; not added again")
        if len(duplicates) > limit:
            out.append(f"... and {len(duplicates) - limit} more duplicate(s)")
        for name, why in self.skipped[:limit]:
            out.append(f"skipped: {name}: {why}")
        if len(self.skipped) > limit:
            out.append(f"... and {len(self.skipped) - limit} more skipped file(s)")
        out.extend(self.notes[:limit])
        if len(self.notes) > limit:
            out.append(f"... and {len(self.notes) - limit} more note(s)")
        return out


class Project:
    """A project folder. Thread-safe: each thread gets its own SQLite connection."""

    def __init__(self, root: str | os.PathLike, *, _create: bool = False):
        self.root = Path(root).resolve()
        self.db_path = self.root / DB_NAME
        if not _create and not self.db_path.is_file():
            raise ProjectError(f"{self.root}: not a project (no {DB_NAME}); create it with 'init'.")
        #: the scribble layer the scribble methods use when they are given none (``app.py --layer``)
        self.scribble_layer = DEFAULT_LAYER
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        conn = self._conn()
        try:
            migrate(conn)
        except sqlite3.DatabaseError as e:
            raise ProjectError(f"{self.db_path}: the database cannot be read ({e}).") from None
        for d in ("images", "scribbles", "masks", "models", "exports"):
            (self.root / d).mkdir(exist_ok=True)

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, root: str | os.PathLike, classes: Sequence[str] | None = None) -> "Project":
        """Create a new project folder. ``classes`` defaults to ``["background", "object"]``.

        A folder that cannot be created (or written) is a :class:`ProjectError` naming it and the
        reason; on any failure nothing created here is left behind.
        """
        root = Path(root)
        if (root / DB_NAME).exists():
            raise ProjectError(f"{root}: a project already exists here.")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: exists and is not a folder.")
        names: list[str] = []
        for name in classes if classes is not None else DEFAULT_CLASSES:
            names.append(_valid_class_name(name, names))
        p = None
        with removed_on_failure(root):
            try:
                root.mkdir(parents=True, exist_ok=True)
                _new_database_file(root / DB_NAME)
                p = cls(root, _create=True)
                with p.transaction():
                    for name in names:
                        p.add_class(name)
            except BaseException as e:
                if p is not None:
                    p.close()
                if isinstance(e, OSError):
                    raise ProjectError(f"{root}: cannot create the project folder ({e.strerror or e}).") from None
                if isinstance(e, sqlite3.Error):
                    raise ProjectError(f"{root}: cannot create the project database ({e}).") from None
                raise
        return p

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Project":
        return cls(root)

    @classmethod
    def open_or_create(cls, root: str | os.PathLike, classes: Sequence[str] | None = None) -> "Project":
        return cls(root) if (Path(root) / DB_NAME).is_file() else cls.create(root, classes)

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def models_for_classes(self) -> list[str]:
        """The names of the saved models (``models/<name>.json``) trained for the project's classes
        as they are now (names in order; a rename updates them): those that can predict it. A class
        deleted or added leaves them behind (``classes delete`` says so)."""
        out = []
        for f in sorted(self.models_dir.glob("*.json")):
            try:
                cfg = json.loads(f.read_text(encoding="utf-8")).get("config") or {}
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(cfg, dict) and cfg.get("classes") == self.class_names:
                out.append(f.stem)
        return out

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.db_path), timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            self._local.depth = 0
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self, bulk: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one.

        ``bulk=True`` (for imports): files written inside are not fsynced one by one; a single
        ``os.sync()`` makes them all durable just before the commit, so the guarantee is the same.
        """
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        self._local.bulk = bulk
        # One time for every row this transaction writes (taken once it holds the write lock, so
        # later transactions get later times): a mask and strokes stored together (an import)
        # are neither older than the other (layers_changed_since compares them).
        self._local.stamp = _now()
        try:
            yield conn
            if bulk:
                os.sync()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            self._local.depth = 0
            self._local.bulk = False
            self._local.stamp = None

    def _stamp(self) -> str:
        """The ``created`` time of rows written now: the current transaction's time (see
        :meth:`transaction`), or now outside one."""
        return getattr(self._local, "stamp", None) or _now()

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    def _write_file(self, rel: str, data: bytes) -> None:
        bulk = bool(self._local.depth and getattr(self._local, "bulk", False))
        imageio.atomic_write_bytes(self.root / rel, data, durable=not bulk)

    # ----------------------------------------------------------------- classes
    def classes(self) -> list[ClassInfo]:
        return [ClassInfo(r["idx"], r["name"], parse_color(r["color"]))
                for r in self._q("SELECT idx, name, color FROM classes ORDER BY idx")]

    @property
    def num_classes(self) -> int:
        return self._q("SELECT COUNT(*) FROM classes")[0][0]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes()]

    def class_info(self, key: int | str) -> ClassInfo:
        """A class by index or by name (case-insensitive)."""
        for c in self.classes():
            if c.idx == key or (isinstance(key, str) and c.name.lower() == key.strip().lower()):
                return c
        if isinstance(key, str) and key.strip().isdigit():
            return self.class_info(int(key))
        names = ", ".join(f"{c.idx}:{c.name}" for c in self.classes()) or "none"
        raise NotFoundError(f"no class '{key}' in this project (classes: {names}).")

    def _check_class_name(self, name: str) -> str:
        return _valid_class_name(name, self.class_names)

    def add_class(self, name: str, color=None) -> ClassInfo:
        with self.transaction() as conn:
            name = self._check_class_name(name)
            idx = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM classes").fetchone()[0]
            if idx >= 255:
                raise AnnotationError("a project holds at most 255 classes (255 means 'none').")
            rgb = parse_color(color) if color is not None else default_color(idx, name)
            conn.execute("INSERT INTO classes (idx, name, color) VALUES (?, ?, ?)", (idx, name, color_hex(rgb)))
        return ClassInfo(idx, name, rgb)

    def rename_class(self, key: int | str, new_name: str) -> ClassInfo:
        with self.transaction() as conn:
            c = self.class_info(key)
            if new_name.strip().lower() != c.name.lower():
                new_name = self._check_class_name(new_name)
            else:
                new_name = new_name.strip()
            conn.execute("UPDATE classes SET name = ? WHERE idx = ?", (new_name, c.idx))
        return ClassInfo(c.idx, new_name, c.color)

    def recolor_class(self, key: int | str, color) -> ClassInfo:
        rgb = parse_color(color)
        with self.transaction() as conn:
            c = self.class_info(key)
            conn.execute("UPDATE classes SET color = ? WHERE idx = ?", (color_hex(rgb), c.idx))
        return ClassInfo(c.idx, c.name, rgb)

    def class_usage(self, idx: int) -> dict[str, int]:
        """How many scribble maps, masks and tags use class ``idx`` (current versions only)."""
        n_scr = n_mask = 0
        for r in self._q("SELECT v.file FROM scribble_heads h JOIN scribble_versions v ON v.image_id = h.image_id "
                         "AND v.layer = h.layer AND v.version = h.version"):
            if (imageio.read_label_map(self.root / r["file"]) == idx).any():
                n_scr += 1
        for r in self._q("SELECT file FROM masks WHERE is_current = 1"):
            if (imageio.read_label_map(self.root / r["file"]) == idx).any():
                n_mask += 1
        n_tags = self._q("SELECT COUNT(*) FROM tags WHERE class_idx = ?", (idx,))[0][0]
        return {"scribbles": n_scr, "masks": n_mask, "tags": n_tags}

    def delete_class(self, key: int | str, force: bool = False) -> str:
        """Delete a class. With annotations using it, needs ``force=True``.

        Its pixels become 255 (none / ignore) and classes above it move down by one in every
        scribble version of every layer (so an undo never brings back the old indices) and in
        every mask; a head that changed gets a new version (a window still drawing with the old
        classes is refused as stale) that keeps the ``created`` time of the version it renumbers,
        as the masks keep theirs: a renumbering makes no final mask older than the strokes. Its
        tags go. Returns a summary.

        A project keeps at least two classes (as :func:`check_new_project_classes` asks of a new
        one): deleting one of the last two is refused with :class:`ProjectError`.
        """
        c = self.class_info(key)
        self.check_class_deletable(c)
        usage = self.class_usage(c.idx)
        uses, effects = usage_text(usage)
        if uses and not force:
            raise ClassInUseError(f"class '{c.name}' is used by {uses}; deleting it needs force ({effects}).",
                                  class_name=c.name, uses=uses, effects=effects)
        lut = np.arange(256, dtype=np.uint8)
        lut[c.idx] = IGNORE
        lut[c.idx + 1 : 255] = np.arange(c.idx, 254, dtype=np.uint8)
        with self.transaction() as conn:
            self.check_class_deletable(c)  # again, inside the transaction: another writer may have deleted one
            heads = {(r[0], r[1]): r[2] for r in conn.execute("SELECT image_id, layer, version FROM scribble_heads")}
            changed_heads = []
            for r in conn.execute("SELECT image_id, layer, version, file, created FROM scribble_versions").fetchall():
                new = self._remap_label_file(r["file"], lut,
                                             self._scribble_rel(r["image_id"], r["layer"], r["version"]))
                if new is None:
                    continue
                rel, arr = new
                conn.execute("UPDATE scribble_versions SET file = ?, n_pixels = ? WHERE image_id = ? AND layer = ? "
                             "AND version = ?", (rel, int((arr != IGNORE).sum()), r["image_id"], r["layer"],
                                                 r["version"]))
                if heads.get((r["image_id"], r["layer"])) == r["version"]:
                    changed_heads.append((r["image_id"], r["layer"], arr, r["created"]))
            # A renumbering is not new strokes: the new head keeps the time of the version it
            # renumbers (as a remapped mask keeps its own), so no mask becomes older than strokes.
            for image_id, layer, arr, created in changed_heads:
                self._save_scribbles_locked(conn, image_id, arr, layer, None, "delete_class", created=created)
            for r in conn.execute("SELECT id, image_id, kind, file FROM masks").fetchall():
                new = self._remap_label_file(r["file"], lut,
                                             f"masks/{r['image_id']}/{r['kind']}-{uuid.uuid4().hex[:12]}.png")
                if new is not None:
                    conn.execute("UPDATE masks SET file = ? WHERE id = ?", (new[0], r["id"]))
            conn.execute("DELETE FROM tags WHERE class_idx = ?", (c.idx,))
            conn.execute("DELETE FROM classes WHERE idx = ?", (c.idx,))
            self._bump_class_epoch(conn)
            n = conn.execute("SELECT COALESCE(MAX(idx), -1) FROM classes").fetchone()[0]
            for i in range(c.idx + 1, n + 1):
                conn.execute("UPDATE classes SET idx = ? WHERE idx = ?", (i - 1, i))
        return f"deleted class '{c.name}'" + (f" (it was used by {uses}: {usage_text(usage, done=True)[1]})"
                                              if uses else "")

    def check_class_deletable(self, c: ClassInfo) -> None:
        """Refuse to delete ``c`` when the project would be left with fewer than two classes."""
        others = [n for n in self.class_names if n != c.name]
        if len(others) < 2:
            raise ProjectError(
                f"cannot delete class '{c.name}': a segmentation project needs at least two classes and this one "
                f"would be left with {len(others)} ({', '.join(others) or 'none'}); add another class first "
                "(or rename this one instead of deleting it).")

    def _remap_label_file(self, rel: str, lut: np.ndarray, new_rel: str) -> tuple[str, np.ndarray] | None:
        """Write ``lut`` applied to the label map at ``rel`` to ``new_rel`` (a name never used
        before: the old file stays until the caller's transaction points its row at the new one);
        ``(new_rel, remapped)``, or ``None`` when the map does not change."""
        old = imageio.read_label_map(self.root / rel)
        new = lut[old]
        if np.array_equal(new, old):
            return None
        self._write_file(new_rel, imageio.encode_label_png(new))
        return new_rel, new

    @property
    def background_index(self) -> int:
        """The background class of the pseudo-labellers (the image border when an image has strokes
        of one other class only, where a binary image starts): the one class whose name says
        background (:data:`BACKGROUND_NAMES`), else class 0."""
        named = background_named(self.class_names)
        return named[0] if len(named) == 1 else 0

    def masks_stamp(self, not_from: str = "") -> int:
        """The newest mask's row id, of those whose source does not start with ``not_from``: it
        changes whenever such a mask is stored. The app's pages compare it (``not_from="app:"``)
        to notice masks stored by the command line, while their own edits and accepts, which they
        know of, do not make every page reload its image."""
        # newest first, stopping at the first row that counts (MAX with a WHERE would read them all)
        r = self._q("SELECT id FROM masks WHERE ? = '' OR substr(source, 1, ?) != ? ORDER BY id DESC LIMIT 1",
                    (not_from, len(not_from), not_from))
        return int(r[0][0]) if r else 0

    @property
    def class_epoch(self) -> int:
        """A number that changes whenever class indices change meaning (:meth:`delete_class` moves
        the classes above it down, :meth:`set_classes` replaces them); a rename, a new colour or a
        class added at the end keeps it. A page that loaded its classes at this epoch may go on
        saving with its class numbers (:func:`app.handlers._check_page_classes`)."""
        r = self._q("SELECT value FROM meta WHERE key = 'class_epoch'")
        try:
            return int(r[0][0]) if r else 0
        except ValueError:
            return 0

    @staticmethod
    def _bump_class_epoch(conn) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('class_epoch', '1') ON CONFLICT(key) DO UPDATE "
                     "SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")

    def set_classes(self, names: Sequence[str]) -> None:
        """Make the class list exactly ``names`` (only on a project with no annotations yet)."""
        current = self.class_names
        if current == list(names):
            return
        n_ann = self._q("SELECT (SELECT COUNT(*) FROM scribble_versions) + (SELECT COUNT(*) FROM masks) + "
                        "(SELECT COUNT(*) FROM tags)")[0][0]
        if n_ann:
            raise AnnotationError(
                f"the project's classes ({', '.join(current)}) differ from ({', '.join(names)}) and it already "
                "has annotations; import into a new project or edit the classes first.")
        with self.transaction() as conn:
            conn.execute("DELETE FROM classes")
            self._bump_class_epoch(conn)
            for n in names:
                self.add_class(n)

    # ----------------------------------------------------------------- images
    def _row_to_image(self, r: sqlite3.Row) -> ImageInfo:
        return ImageInfo(r["id"], r["name"], r["orig_name"], r["file"], r["sha256"], r["width"], r["height"],
                         r["channels"], r["added"])

    def images(self, status: str | None = None, image_set: str | None = None) -> list[ImageInfo]:
        """Images in insertion order, optionally only those of a status or an image set."""
        if image_set is not None:
            rows = self._q("SELECT i.* FROM images i JOIN image_sets s ON s.image_id = i.id "
                           "WHERE s.set_name = ? ORDER BY i.id", (image_set,))
        else:
            rows = self._q("SELECT * FROM images ORDER BY id")
        out = [self._row_to_image(r) for r in rows]
        if status is not None:
            if status not in STATUS_ORDER:
                raise AnnotationError(f"unknown status '{status}' (known: {', '.join(STATUS_ORDER)}).")
            st = self.statuses()
            out = [i for i in out if st.get(i.id) == status]
        return out

    def image_ids(self) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM images ORDER BY id")]

    def image_info(self, image_id: int) -> ImageInfo:
        rows = self._q("SELECT * FROM images WHERE id = ?", (int(image_id),))
        if not rows:
            raise NotFoundError(f"no image with id {image_id} in this project.")
        return self._row_to_image(rows[0])

    def image_by_name(self, name: str) -> ImageInfo:
        """An image by its name in the project, the name it was added under (``orig_name``), or
        either of those as :func:`sanitize_name` writes it; then by the name without extension."""
        safe = sanitize_name(name)
        rows = (self._q("SELECT * FROM images WHERE name = ? ORDER BY id", (name,))
                or self._q("SELECT * FROM images WHERE name = ? ORDER BY id", (safe,))
                or self._q("SELECT * FROM images WHERE orig_name = ? ORDER BY id", (name,)))
        if not rows:
            stems = {os.path.splitext(os.path.basename(name))[0], os.path.splitext(safe)[0]}
            rows = [r for r in self._q("SELECT * FROM images ORDER BY id") if os.path.splitext(r["name"])[0] in stems]
        if not rows:
            raise NotFoundError(f"no image named '{name}' in this project.")
        return self._row_to_image(rows[0])

    def image_path(self, image_id: int) -> Path:
        return self.root / self.image_info(image_id).file

    def load_image(self, image_id: int) -> np.ndarray:
        """The image for display and segmentation: ``(H, W)`` or ``(H, W, 3)`` uint8.

        Raises :class:`ImageError` when its file is missing (deleted or moved outside the tool) or
        cannot be read, naming the image as the project knows it, its file, and the remedy
        (:meth:`file_remedy`)."""
        info = self.image_info(image_id)
        try:
            data = (self.root / info.file).read_bytes()
        except FileNotFoundError:
            why = "is missing from the project folder"
        except OSError as e:
            why = f"cannot be read ({e.strerror or e})"
        else:
            try:
                return imageio.decode_image(data, info.name)
            except ImageError as e:
                raise ImageError(f"{str(e).rstrip('.')} (file {info.file}). {self.file_remedy([info])}") from None
        raise ImageError(f"{info.name}: its file {info.file} {why}. {self.file_remedy([info])}")

    def missing_files(self, image_ids: Iterable[int] | None = None, verify: bool = False) -> list[ImageInfo]:
        """The images (of ``image_ids``; default: every image) whose file is gone from the project
        folder (deleted or moved outside the tool), in insertion order; one ``stat`` per image.

        ``verify``: also those whose file is there but can no longer be used (:meth:`file_usable`:
        damaged or truncated, or replaced by an image of another size); this reads every file."""
        ids = None if image_ids is None else {int(i) for i in image_ids}
        out = []
        for im in self.images():
            if ids is not None and im.id not in ids:
                continue
            path = self.root / im.file
            if not path.is_file() or (verify and not self.file_usable(im)):
                out.append(im)
        return out

    #: An image file whose modification time is its image's ``added`` time (to this many seconds:
    #: FAT keeps 2 s) is the file the tool wrote, untouched since (:meth:`file_usable`).
    STAMP_SLACK_S = 2.0

    def _stamp_file(self, rel: str, added: str) -> None:
        """Give an image file the modification time ``added`` (its image's): while it keeps that
        time it is the file the tool wrote, and :meth:`file_usable` need not read it."""
        try:
            t = datetime.fromisoformat(added).timestamp()
            os.utime(self.root / rel, (t, t))
        except (OSError, ValueError):  # a read-only or odd file system: the file is read when checked
            pass

    def file_usable(self, info: ImageInfo) -> bool:
        """Whether the image's file still holds a picture the annotations fit: the file the tool
        wrote, untouched since (its time is still its image's ``added`` time, as the tool sets it;
        ``git status`` trusts a file's time the same way), else the bytes added (their sha256; they
        were decoded then: the file's time is set back, so the next check need not read it), or
        other bytes that decode to an image of the recorded size (the file re-saved elsewhere).
        False for a damaged or truncated file, or a file that cannot be read."""
        path = self.root / info.file
        try:
            if abs(path.stat().st_mtime - datetime.fromisoformat(info.added).timestamp()) <= self.STAMP_SLACK_S:
                return True
        except (OSError, ValueError):
            pass
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() == info.sha256:
            self._stamp_file(info.file, info.added)  # e.g. a project copied without its files' times
            return True
        try:
            arr = imageio.decode_image(data, info.name)
        except ImageError:
            return False
        return arr.shape[:2] == (info.height, info.width)

    def file_remedy(self, infos: Sequence[ImageInfo]) -> str:
        """What to do about the images ``infos`` whose file is missing or unreadable: put the files
        back, or take the images out with ``remove-image`` (a command line to copy)."""
        import shlex

        one = len(infos) == 1
        names = " ".join(shlex.quote(im.name) for im in infos[:10]) + (" ..." if len(infos) > 10 else "")
        return (f"Put {'a good copy of the file back at that path' if one else 'good copies of the files back at those paths'} "
                f"in {self.root} "
                f"(the annotations are kept), or take {'the image' if one else 'the images'} out of the project: "
                f"python -m segmenter remove-image {shlex.quote(str(self.root))} {names}")

    def files_note(self, infos: Sequence[ImageInfo], lead: str, why: str = "is missing or unreadable") -> str:
        """One line: ``lead`` (``"skipped"``, ``"left out"``), the images ``infos`` whose file
        ``why``, named with their files (the first five), then :meth:`file_remedy`."""
        n = len(infos)
        names = ", ".join(f"{im.name} ({im.file})" for im in infos[:5]) + (f", ... ({n - 5} more)" if n > 5 else "")
        return f"{lead} {n} image{'' if n == 1 else 's'} whose file {why}: {names}. {self.file_remedy(infos)}"

    def _unique_name(self, conn: sqlite3.Connection, name: str) -> str:
        """``name``, or ``<stem>_2<ext>`` (``_3`` ...) when an image has that stem already, ignoring
        case: exports write one file per stem, and ``Img.png`` and ``img.png`` are one file on
        Windows and macOS."""
        stem, ext = os.path.splitext(name)
        stems = {os.path.splitext(r[0])[0].lower() for r in conn.execute("SELECT name FROM images")}
        if stem.lower() not in stems:
            return name
        k = 2
        while f"{stem}_{k}".lower() in stems:
            k += 1
        return f"{stem}_{k}{ext}"

    def add_image(self, source: str | os.PathLike | bytes, name: str | None = None,
                  max_pixels: int = imageio.MAX_PIXELS, allow_same_content: bool = False) -> ImageInfo:
        """Copy an image into the project. Raises :class:`ImageError` or :class:`DuplicateImageError`.

        An image whose bytes are already in the project is a duplicate and is refused, unless
        ``allow_same_content`` (a dataset can hold two samples with equal pixels but their own labels).
        """
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
            name = name or "image.png"
        else:
            path = Path(source)
            name = name or path.name
            try:
                data = path.read_bytes()
            except OSError as e:
                raise ImageError(f"{path.name}: cannot read the file ({e.strerror or e}).") from None
        orig_name = os.path.basename(str(name).replace("\\", "/")) or str(name)
        name = sanitize_name(name)
        arr = imageio.decode_image(data, name, max_pixels)  # validates; raises ImageError
        h, w = arr.shape[:2]
        ch = 1 if arr.ndim == 2 else arr.shape[2]
        digest = hashlib.sha256(data).hexdigest()
        ext = os.path.splitext(name)[1].lower()
        if ext not in imageio.IMAGE_EXTENSIONS:
            ext = ".png"
        with self.transaction() as conn:
            dup = conn.execute("SELECT name FROM images WHERE sha256 = ?", (digest,)).fetchone()
            if dup and not allow_same_content:
                raise DuplicateImageError(f"{name}: the same image is already in the project as {dup[0]}.",
                                          existing=dup[0])
            final_name = self._unique_name(conn, name)
            rel = f"images/{uuid.uuid4().hex[:10]}_{sanitize_name(final_name)}"
            if os.path.splitext(rel)[1].lower() != ext:
                rel += ext
            self._write_file(rel, data)
            added = self._stamp()
            self._stamp_file(rel, added)
            cur = conn.execute(
                "INSERT INTO images (name, orig_name, file, sha256, width, height, channels, added) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (final_name, orig_name, rel, digest, w, h, ch, added))
            image_id = cur.lastrowid
            row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return self._row_to_image(row)

    def import_images(self, paths: Iterable[str | os.PathLike]) -> ImportSummary:
        """Add many image files; a bad file is skipped with its reason, never aborting the import."""
        import time

        t0 = time.perf_counter()
        s = ImportSummary()
        transparent: list[str] = []
        for p in paths:
            p = Path(p)
            try:
                info = self.add_image(p)
                s.added.append(info)
                if imageio.has_alpha(p):
                    transparent.append(info.name)
                if info.name != sanitize_name(p.name):
                    s.notes.append(f"note: {p.name} is named {info.name} in the project ({self._clash(info, p.name)})")
            except DuplicateImageError as e:
                s.duplicates.append((p.name, e.existing))
            except AnnotationError as e:
                s.skipped.append((p.name, str(e).split(": ", 1)[-1]))
        if transparent:
            n = len(transparent)
            s.notes.append(f"note: {n} image(s) have transparency, which the tool does not use: their transparent "
                           "areas are shown and segmented as the colours stored beneath them ("
                           + ", ".join(transparent[:10]) + (" ..." if n > 10 else "") + ")")
        s.seconds = time.perf_counter() - t0
        return s

    def _clash(self, info: ImageInfo, wanted: str) -> str:
        """Why ``wanted`` was renamed to ``info.name`` (:meth:`_unique_name`): the other image whose
        stem it shares, ignoring case (exports write one file per stem)."""
        wanted = sanitize_name(wanted)
        stem = os.path.splitext(wanted)[0].lower()
        other = next((r[0] for r in self._q("SELECT name FROM images WHERE id != ? ORDER BY id", (info.id,))
                      if os.path.splitext(r[0])[0].lower() == stem), None)
        if other is None:
            return "another image has the name without its extension, ignoring case"
        if other.lower() == wanted.lower():
            return f"the image {other} has that name" + ("" if other == wanted else ", ignoring case")
        return (f"the image {other} has the same name without its extension"
                + ("" if os.path.splitext(other)[0] == os.path.splitext(wanted)[0] else ", ignoring case")
                + "; an export writes one file per name")

    def rename_image(self, image_id: int, new_name: str) -> ImageInfo:
        """Give an image another name (made safe with :func:`sanitize_name`; the extension is kept
        when ``new_name`` has none). A name whose stem another image has, ignoring case, is refused."""
        info = self.image_info(image_id)
        raw = str(new_name).strip()
        if not raw:
            raise AnnotationError("an image needs a name.")
        name = sanitize_name(raw if os.path.splitext(raw)[1] else raw + os.path.splitext(info.name)[1])
        stem = os.path.splitext(name)[0].lower()
        with self.transaction() as conn:
            for other_id, other in conn.execute("SELECT id, name FROM images"):
                if other_id != info.id and os.path.splitext(other)[0].lower() == stem:
                    raise AnnotationError(f"cannot rename {info.name} to {name}: the image {other} has that name "
                                          "(ignoring case and extension); choose another name.")
            conn.execute("UPDATE images SET name = ? WHERE id = ?", (name, info.id))
        return self.image_info(info.id)

    def delete_image(self, image_id: int) -> None:
        info = self.image_info(image_id)
        with self.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (info.id,))

    # ----------------------------------------------------------------- image sets
    def image_sets(self) -> list[str]:
        return [r[0] for r in self._q("SELECT DISTINCT set_name FROM image_sets ORDER BY set_name")]

    def image_set(self, name: str) -> list[int]:
        if name not in self.image_sets():
            known = ", ".join(self.image_sets()) or "none"
            raise NotFoundError(f"no image set named '{name}' (known: {known}).")
        return [r[0] for r in self._q("SELECT image_id FROM image_sets WHERE set_name = ? ORDER BY image_id",
                                      (name,))]

    def add_to_set(self, name: str, image_ids: Iterable[int]) -> None:
        name = str(name).strip()
        if not name:
            raise AnnotationError("an image set needs a name.")
        with self.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO image_sets (set_name, image_id) VALUES (?, ?)",
                             [(name, int(i)) for i in image_ids])

    # ----------------------------------------------------------------- label maps
    def check_label_map(self, image_id: int, label: np.ndarray, what: str = "scribble map") -> np.ndarray:
        """Validate a label map against the image size and the classes; return it as uint8."""
        info = self.image_info(image_id)
        arr = np.asarray(label)
        if arr.ndim != 2:
            raise LabelMapError(f"{info.name}: a {what} must be a 2-D index map, got shape {arr.shape}.")
        if arr.shape != (info.height, info.width):
            raise LabelMapError(
                f"{info.name}: the {what} is {arr.shape[1]}x{arr.shape[0]} but the image is "
                f"{info.width}x{info.height}.")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.integer) or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
                raise LabelMapError(f"{info.name}: a {what} must hold class indices 0..254 or 255 (none).")
            arr = arr.astype(np.uint8)
        n = self.num_classes
        vals = np.unique(arr)
        bad = [int(v) for v in vals if v != IGNORE and v >= n]
        if bad:
            raise LabelMapError(
                f"{info.name}: the {what} uses class index {bad[0]} but the project has {n} classes "
                f"(0..{n - 1}); 255 means none.")
        return np.ascontiguousarray(arr)

    # ----------------------------------------------------------------- scribbles
    def _layer(self, layer: str | None) -> str:
        """``layer``, or :attr:`scribble_layer` when it is None (the scribble methods' default)."""
        return self.scribble_layer if layer is None else layer

    def scribble_version(self, image_id: int, layer: str | None = None) -> int:
        layer = self._layer(layer)
        r = self._q("SELECT version FROM scribble_heads WHERE image_id = ? AND layer = ?", (int(image_id), layer))
        return r[0][0] if r else 0

    def scribble_layers(self, image_id: int | None = None) -> list[str]:
        if image_id is None:
            rows = self._q("SELECT DISTINCT layer FROM scribble_heads ORDER BY layer")
        else:
            rows = self._q("SELECT layer FROM scribble_heads WHERE image_id = ? ORDER BY layer", (int(image_id),))
        return [r[0] for r in rows]

    def _stroke_heads(self, image_id: int | None = None) -> dict[int, tuple[str, str]]:
        """``{image_id: (layer, created)}``: each image's :meth:`stroke_layer` and the time its
        current strokes there were saved (images without strokes are left out)."""
        sql = ("SELECT h.image_id, h.layer, v.created FROM scribble_heads h JOIN scribble_versions v "
               "ON v.image_id = h.image_id AND v.layer = h.layer AND v.version = h.version WHERE v.n_pixels > 0"
               + (" AND h.image_id = ?" if image_id is not None else "") + " ORDER BY h.image_id, h.layer")
        out: dict[int, tuple[str, str]] = {}
        for r in self._q(sql, () if image_id is None else (int(image_id),)):
            if r[0] not in out or r[1] == self.scribble_layer:
                out[r[0]] = (r[1], r[2])
        return out

    def stroke_layer(self, image_id: int) -> str | None:
        """The one layer whose strokes count for the image's masks: :attr:`scribble_layer` when the
        image has strokes there, else the first layer (by name) it has strokes in; ``None`` when it
        has none. An export corrects a stored mask by this layer's strokes (and makes a pseudo-mask
        from them), and only this layer's strokes make a mask older than the strokes: strokes of
        another layer (a dataset's scribble set imported later) do not."""
        got = self._stroke_heads(image_id).get(int(image_id))
        return got[0] if got else None

    def layers_changed_since(self, image_id: int, since: str) -> list[str]:
        """``[layer]``, the image's :meth:`stroke_layer`, when its current strokes (at least one
        pixel) were saved after the time ``since`` (a ``created`` of this store, e.g. a mask's);
        else ``[]``. With ``since=""``: the layer the image has strokes in, if any. Strokes of the
        image's other layers are not counted (an export does not correct by them)."""
        got = self._stroke_heads(image_id).get(int(image_id))
        return [got[0]] if got and got[1] > str(since) else []

    def layers_drawn_after(self, image_id: int, kind: str = "final") -> list[str]:
        """``[layer]`` when the current strokes of the image's :meth:`stroke_layer` were saved after
        the image's current mask of ``kind`` (``[]`` when they were not, or it has no such mask).
        For ``final``: strokes drawn after the mask was accepted, which it may contradict (an
        export corrects it by them, :func:`annotations.formats._common.export_mask`). Strokes
        stored in the same transaction as the mask (an import of both) are not after it, and a
        renumbering of the classes (:meth:`delete_class`) keeps the times of what it renumbers."""
        mi = self.mask_info(image_id, kind)
        return [] if mi is None else self.layers_changed_since(image_id, mi.created)

    def final_older_than_strokes(self, image_id: int) -> bool:
        """Whether the image's final mask is older than its current strokes in its
        :meth:`stroke_layer`: strokes were drawn after it was accepted (see :meth:`layers_drawn_after`)."""
        return bool(self.layers_drawn_after(image_id, "final"))

    def finals_older_than_strokes(self) -> list[int]:
        """The images whose final mask is older than their current strokes (in each image's
        :meth:`stroke_layer`), by id: :meth:`final_older_than_strokes` for every image at once
        (``status`` counts them)."""
        heads = self._stroke_heads()
        finals = {r[0]: r[1] for r in self._q("SELECT image_id, created FROM masks WHERE kind = 'final' "
                                              "AND is_current = 1")}
        return sorted(i for i, created in finals.items() if i in heads and heads[i][1] > created)

    def masks_showing_absent(self, kinds: Sequence[str] = ("final", "imported", "predicted", "pseudo")) -> list[int]:
        """The images whose mask (the first of ``kinds`` they have, as ``export --masks best``
        chooses) shows a class the image is tagged absent (the tag set after the mask was made),
        by id: an export re-segments those pixels without the class
        (:func:`annotations.formats._common.export_mask`); ``status`` counts them."""
        absent: dict[int, list[int]] = {}
        for r in self._q("SELECT image_id, class_idx FROM tags WHERE state = 'absent' ORDER BY image_id"):
            absent.setdefault(r[0], []).append(r[1])
        out = []
        for i, classes in absent.items():
            got = self.best_mask(i, kinds)
            if got is not None and np.isin(got[0], classes).any():
                out.append(i)
        return out

    def fallback_layer(self, layer: str) -> str | None:
        """The layer to turn to when ``layer`` holds no strokes but other layers do (an import puts a
        dataset's scribble set in a layer of its own name): the first of them; else ``None``."""
        layers = self.scribble_layers()
        return None if not layers or layer in layers else layers[0]

    def scribbles(self, image_id: int, layer: str | None = None, version: int | None = None) -> np.ndarray | None:
        """Current (or a given version's) scribbles: ``(H, W) uint8``, 255 = none; ``None`` if never drawn."""
        layer = self._layer(layer)
        v = self.scribble_version(image_id, layer) if version is None else int(version)
        if v == 0:
            return None
        r = self._q("SELECT file FROM scribble_versions WHERE image_id = ? AND layer = ? AND version = ?",
                    (int(image_id), layer, v))
        if not r:
            raise NotFoundError(f"image {image_id} has no scribble version {v} in layer '{layer}'.")
        return imageio.read_label_map(self.root / r[0][0])

    def scribbles_at(self, image_id: int, when: str, layer: str | None = None) -> np.ndarray | None:
        """The scribbles of ``layer`` as they were at ``when`` (an ISO time in UTC, as the store
        writes them): its newest version saved then or before; ``None`` if nothing was drawn yet."""
        layer = self._layer(layer)
        r = self._q("SELECT MAX(version) FROM scribble_versions WHERE image_id = ? AND layer = ? AND created <= ?",
                    (int(image_id), layer, str(when)))
        v = r[0][0] if r else None
        return None if v is None else self.scribbles(image_id, layer, version=int(v))

    def save_scribbles(self, image_id: int, scribbles: np.ndarray, *, layer: str | None = None,
                       expected_version: int | None = None, author: str | None = None) -> int:
        """Save a new version of an image's scribbles; returns the new version number.

        ``expected_version``: the version this edit started from. If the stored head differs
        (another writer saved meanwhile, or an undo happened), :class:`StaleWriteError` is raised
        and nothing is written. ``None`` skips the check (last writer wins).
        """
        arr = self.check_label_map(image_id, scribbles)
        layer = str(self._layer(layer)).strip() or DEFAULT_LAYER
        with self.transaction() as conn:
            return self._save_scribbles_locked(conn, int(image_id), arr, layer, expected_version, author)

    def _save_scribbles_locked(self, conn, image_id: int, arr: np.ndarray, layer: str,
                               expected_version: int | None, author: str | None,
                               created: str | None = None) -> int:
        """``created``: the time to record (default: now, :meth:`_stamp`); :meth:`delete_class`
        gives a renumbered head the time of the version it renumbers."""
        head = conn.execute("SELECT version, latest FROM scribble_heads WHERE image_id = ? AND layer = ?",
                            (image_id, layer)).fetchone()
        current = head["version"] if head else 0
        if expected_version is not None and int(expected_version) != current:
            raise StaleWriteError(
                f"image {image_id}: these scribbles were drawn on version {expected_version}, but version "
                f"{current} was saved since (another window or user); reload the image to see it, then redo "
                "the strokes.")
        latest = head["latest"] if head else 0
        new_v = latest + 1
        rel = self._scribble_rel(image_id, layer, new_v)
        self._write_file(rel, imageio.encode_label_png(arr))
        conn.execute("INSERT INTO scribble_versions (image_id, layer, version, file, author, created, n_pixels) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (image_id, layer, new_v, rel, author, created or self._stamp(), int((arr != IGNORE).sum())))
        conn.execute("INSERT INTO scribble_heads (image_id, layer, version, latest) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(image_id, layer) DO UPDATE SET version = excluded.version, "
                     "latest = excluded.latest", (image_id, layer, new_v, new_v))
        return new_v

    @staticmethod
    def _scribble_rel(image_id: int, layer: str, version: int) -> str:
        """A new, never used file name for a scribble version."""
        return f"scribbles/{image_id}/{sanitize_name(layer, 'layer')}-{version}-{uuid.uuid4().hex[:8]}.png"

    def _versions(self, conn, image_id: int, layer: str) -> list[int]:
        return [r[0] for r in conn.execute("SELECT version FROM scribble_versions WHERE image_id = ? AND layer = ? "
                                           "ORDER BY version", (image_id, layer))]

    def undo_scribbles(self, image_id: int, layer: str | None = None) -> int:
        """Move the head back one version (0 = no scribbles); returns the new head. Redo undoes it."""
        layer = self._layer(layer)
        with self.transaction() as conn:
            cur = self.scribble_version(image_id, layer)
            if cur == 0:
                raise AnnotationError(f"image {image_id}: nothing to undo.")
            prev = max([v for v in self._versions(conn, int(image_id), layer) if v < cur], default=0)
            conn.execute("UPDATE scribble_heads SET version = ? WHERE image_id = ? AND layer = ?",
                         (prev, int(image_id), layer))
        return prev

    def redo_scribbles(self, image_id: int, layer: str | None = None) -> int:
        """Move the head forward one version, if an undo left one; returns the new head."""
        layer = self._layer(layer)
        with self.transaction() as conn:
            row = conn.execute("SELECT version, latest FROM scribble_heads WHERE image_id = ? AND layer = ?",
                               (int(image_id), layer)).fetchone()
            if row is None or row["version"] >= row["latest"]:
                raise AnnotationError(f"image {image_id}: nothing to redo.")
            nxt = min(v for v in self._versions(conn, int(image_id), layer) if v > row["version"])
            conn.execute("UPDATE scribble_heads SET version = ? WHERE image_id = ? AND layer = ?",
                         (nxt, int(image_id), layer))
        return nxt

    # ----------------------------------------------------------------- tags
    def set_tag(self, image_id: int, class_idx: int, state: str) -> None:
        """Set an image-level tag: ``present``, ``absent`` or ``unknown`` (removes it)."""
        if state not in TAG_STATES:
            raise AnnotationError(f"tag state must be one of {', '.join(TAG_STATES)}, not '{state}'.")
        self.image_info(image_id)
        c = self.class_info(int(class_idx))
        with self.transaction() as conn:
            if state == "unknown":
                gone = conn.execute("DELETE FROM tags WHERE image_id = ? AND class_idx = ?", (int(image_id), c.idx))
                if gone.rowcount:  # when, for a re-import of an older export (tag_cleared)
                    conn.execute("INSERT OR REPLACE INTO tag_clears (image_id, class_idx, cleared) VALUES (?, ?, ?)",
                                 (int(image_id), c.idx, self._stamp()))
            else:
                conn.execute("INSERT INTO tags (image_id, class_idx, state) VALUES (?, ?, ?) "
                             "ON CONFLICT(image_id, class_idx) DO UPDATE SET state = excluded.state",
                             (int(image_id), c.idx, state))
                conn.execute("DELETE FROM tag_clears WHERE image_id = ? AND class_idx = ?", (int(image_id), c.idx))

    def tag_cleared(self, image_id: int, class_idx: int) -> str | None:
        """When the tag of ``class_idx`` on the image was last cleared (set back to unknown) and
        not set since (the store's time stamp), or ``None``."""
        rows = self._q("SELECT cleared FROM tag_clears WHERE image_id = ? AND class_idx = ?",
                       (int(image_id), int(class_idx)))
        return rows[0][0] if rows else None

    def tags(self, image_id: int) -> dict[int, str]:
        """``{class_idx: "present" | "absent"}``; classes not listed are unknown."""
        return {r[0]: r[1] for r in self._q("SELECT class_idx, state FROM tags WHERE image_id = ? ORDER BY class_idx",
                                            (int(image_id),))}

    def all_tags(self) -> dict[int, dict[int, str]]:
        out: dict[int, dict[int, str]] = {}
        for r in self._q("SELECT image_id, class_idx, state FROM tags"):
            out.setdefault(r[0], {})[r[1]] = r[2]
        return out

    # ----------------------------------------------------------------- masks
    def _row_to_mask(self, r: sqlite3.Row) -> MaskInfo:
        return MaskInfo(r["id"], r["image_id"], r["kind"], r["source"], r["model_version"], r["uncertainty"],
                        r["created"], r["file"], r["conf_file"])

    def save_mask(self, image_id: int, mask: np.ndarray, kind: str, *, source: str,
                  model_version: str | None = None, confidence: np.ndarray | None = None,
                  uncertainty: float | None = None) -> MaskInfo:
        """Store a mask of ``kind`` as the current one of that kind, with its provenance.

        ``mask``: (H, W) uint8 class index, 255 = ignore. ``confidence``: (H, W) float in [0, 1],
        stored at 8-bit precision. ``uncertainty``: one number per image (higher = less sure).
        """
        if kind not in MASK_KINDS:
            raise AnnotationError(f"unknown mask kind '{kind}' (known: {', '.join(MASK_KINDS)}).")
        arr = self.check_label_map(image_id, mask, what=f"{kind} mask")
        conf_rel = None
        token = uuid.uuid4().hex[:12]
        rel = f"masks/{int(image_id)}/{kind}-{token}.png"
        if confidence is not None:
            conf = np.asarray(confidence, dtype=np.float32)
            if conf.shape != arr.shape:
                raise LabelMapError(f"image {image_id}: the confidence map is {conf.shape}, the mask {arr.shape}.")
            conf8 = np.clip(np.nan_to_num(conf) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            conf_rel = f"masks/{int(image_id)}/{kind}-{token}.conf.png"
        with self.transaction() as conn:
            self._write_file(rel, imageio.encode_label_png(arr))
            if conf_rel:
                self._write_file(conf_rel, imageio.encode_label_png(conf8))
            conn.execute("UPDATE masks SET is_current = 0 WHERE image_id = ? AND kind = ?", (int(image_id), kind))
            cur = conn.execute(
                "INSERT INTO masks (image_id, kind, file, conf_file, source, model_version, uncertainty, created, "
                "is_current) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (int(image_id), kind, rel, conf_rel, str(source), model_version,
                 None if uncertainty is None else float(uncertainty), self._stamp()))
            row = conn.execute("SELECT * FROM masks WHERE id = ?", (cur.lastrowid,)).fetchone()
        return self._row_to_mask(row)

    def mask_info(self, image_id: int, kind: str) -> MaskInfo | None:
        r = self._q("SELECT * FROM masks WHERE image_id = ? AND kind = ? AND is_current = 1 ORDER BY id DESC LIMIT 1",
                    (int(image_id), kind))
        return self._row_to_mask(r[0]) if r else None

    def mask_history(self, image_id: int, kind: str | None = None) -> list[MaskInfo]:
        sql = "SELECT * FROM masks WHERE image_id = ?" + (" AND kind = ?" if kind else "") + " ORDER BY id"
        return [self._row_to_mask(r) for r in self._q(sql, (int(image_id), kind) if kind else (int(image_id),))]

    def mask(self, image_id: int, kind: str) -> np.ndarray | None:
        """The current mask of ``kind``: (H, W) uint8, 255 = ignore; ``None`` if there is none."""
        info = self.mask_info(image_id, kind)
        return imageio.read_label_map(self.root / info.file) if info else None

    def confidence(self, image_id: int, kind: str) -> np.ndarray | None:
        """The confidence map saved with the current mask of ``kind``: (H, W) float32 in [0, 1]."""
        info = self.mask_info(image_id, kind)
        if not info or not info.conf_file:
            return None
        return imageio.read_label_map(self.root / info.conf_file).astype(np.float32) / 255.0

    def best_mask(self, image_id: int, kinds: Sequence[str] = ("final", "imported", "predicted", "pseudo")):
        """``(mask, MaskInfo)`` of the first kind in ``kinds`` that the image has, else ``None``."""
        for k in kinds:
            info = self.mask_info(image_id, k)
            if info:
                return imageio.read_label_map(self.root / info.file), info
        return None

    def clear_mask(self, image_id: int, kind: str) -> None:
        """Make no mask of ``kind`` current (the files and history stay)."""
        with self.transaction() as conn:
            conn.execute("UPDATE masks SET is_current = 0 WHERE image_id = ? AND kind = ?", (int(image_id), kind))

    # ----------------------------------------------------------------- status
    def statuses(self) -> dict[int, str]:
        """``{image_id: status}``, status the most advanced of STATUS_ORDER the image has reached."""
        st = {i: "untouched" for i in self.image_ids()}
        rank = {s: k for k, s in enumerate(STATUS_ORDER)}

        def bump(i, s):
            if i in st and rank[s] < rank[st[i]]:
                st[i] = s

        for r in self._q("SELECT DISTINCT image_id FROM tags"):
            bump(r[0], "tagged")
        for i in self.scribbled_ids():
            bump(i, "scribbled")
        for r in self._q("SELECT DISTINCT image_id, kind FROM masks WHERE is_current = 1"):
            bump(r[0], r[1])
        return st

    def scribbled_ids(self) -> list[int]:
        """Images whose current strokes (any layer) hold at least one pixel."""
        return [r[0] for r in self._q(
            "SELECT DISTINCT h.image_id FROM scribble_heads h JOIN scribble_versions v ON v.image_id = h.image_id "
            "AND v.layer = h.layer AND v.version = h.version WHERE v.n_pixels > 0")]

    def annotated_ids(self) -> set[int]:
        """Images a person has labelled: a tag, a stroke, a final or imported mask, or a pseudo-mask
        (made from those). A predicted mask alone is the model's work, not an annotation, though
        :meth:`statuses` ranks ``predicted`` above ``scribbled``."""
        ids = {r[0] for r in self._q("SELECT DISTINCT image_id FROM tags")}
        ids.update(self.scribbled_ids())
        ids.update(r[0] for r in self._q("SELECT DISTINCT image_id FROM masks WHERE is_current = 1 "
                                         "AND kind IN ('final', 'imported', 'pseudo')"))
        return ids & set(self.image_ids())

    def status(self, image_id: int) -> str:
        self.image_info(image_id)
        return self.statuses()[int(image_id)]

    def counts(self) -> dict:
        """Counts for ``status``: images, per status, per mask kind, final masks older than strokes,
        masks showing a class tagged absent (:meth:`masks_showing_absent`), images whose file is
        missing or damaged (:meth:`missing_files` with ``verify``), scribbles, tags, and per class."""
        st = self.statuses()
        by_status = {s: 0 for s in STATUS_ORDER}
        for s in st.values():
            by_status[s] += 1
        masks = {k: self._q("SELECT COUNT(*) FROM masks WHERE kind = ? AND is_current = 1", (k,))[0][0]
                 for k in MASK_KINDS}
        scribbled = len(self.scribbled_ids())
        per_class = {}
        for c in self.classes():
            present = self._q("SELECT COUNT(*) FROM tags WHERE class_idx = ? AND state = 'present'", (c.idx,))[0][0]
            absent = self._q("SELECT COUNT(*) FROM tags WHERE class_idx = ? AND state = 'absent'", (c.idx,))[0][0]
            per_class[c.name] = {"tagged_present": present, "tagged_absent": absent}
        return {"images": len(st), "status": by_status, "masks": masks, "scribbled_images": scribbled,
                "finals_older_than_strokes": len(self.finals_older_than_strokes()),
                "masks_showing_absent": len(self.masks_showing_absent()),
                "missing_files": len(self.missing_files(verify=True)),
                "tagged_images": self._q("SELECT COUNT(DISTINCT image_id) FROM tags")[0][0],
                "image_sets": {s: len(self.image_set(s)) for s in self.image_sets()},
                "classes": per_class}

    def integrity_check(self) -> str:
        return self._q("PRAGMA integrity_check")[0][0]

    def copy_to(self, dest: str | os.PathLike) -> "Project":
        """A consistent copy of the whole project (SQLite backup API + files)."""
        dest = Path(dest)
        shutil.copytree(self.root, dest, ignore=shutil.ignore_patterns(DB_NAME + "*"))
        _new_database_file(dest / DB_NAME)
        out = sqlite3.connect(str(dest / DB_NAME))
        self._conn().backup(out)
        out.close()
        return Project.open(dest)
