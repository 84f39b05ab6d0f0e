"""The SQLite schema of ``project.db`` and its migrations.

The schema version is SQLite's ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database from
version ``i`` to ``i + 1``; :func:`migrate` applies the missing ones in one transaction each, so a
project made by an older release opens in a newer one. A database of a newer version than this
code knows is refused (never silently downgraded).
"""
from __future__ import annotations

import sqlite3

MASK_KINDS = ("pseudo", "predicted", "final", "imported")
TAG_STATES = ("present", "absent", "unknown")

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE classes (
    idx    INTEGER PRIMARY KEY CHECK (idx >= 0 AND idx < 255),
    name   TEXT NOT NULL UNIQUE,
    color  TEXT NOT NULL
);
CREATE TABLE images (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL UNIQUE,
    orig_name TEXT NOT NULL,
    file      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    channels  INTEGER NOT NULL,
    added     TEXT NOT NULL
);
CREATE TABLE image_sets (
    set_name TEXT NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (set_name, image_id)
);
CREATE TABLE scribble_versions (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    layer    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    file     TEXT NOT NULL,
    author   TEXT,
    created  TEXT NOT NULL,
    n_pixels INTEGER NOT NULL,
    PRIMARY KEY (image_id, layer, version)
);
CREATE TABLE scribble_heads (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    layer    TEXT NOT NULL,
    version  INTEGER NOT NULL,
    latest   INTEGER NOT NULL,
    PRIMARY KEY (image_id, layer)
);
CREATE TABLE tags (
    image_id  INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    class_idx INTEGER NOT NULL REFERENCES classes(idx) ON DELETE CASCADE ON UPDATE CASCADE,
    state     TEXT NOT NULL CHECK (state IN ('present', 'absent')),
    PRIMARY KEY (image_id, class_idx)
);
CREATE TABLE masks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id      INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('pseudo', 'predicted', 'final', 'imported')),
    file          TEXT NOT NULL,
    conf_file     TEXT,
    source        TEXT NOT NULL,
    model_version TEXT,
    uncertainty   REAL,
    created       TEXT NOT NULL,
    is_current    INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX masks_current ON masks(image_id, kind, is_current);
CREATE INDEX images_sha ON images(sha256);
"""

# v2: when a tag was cleared (set back to unknown) in the project: a re-import of an export written
# before that keeps it cleared (annotations.formats._common.LabelMerge)
_V2 = """
CREATE TABLE tag_clears (
    image_id  INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    class_idx INTEGER NOT NULL REFERENCES classes(idx) ON DELETE CASCADE ON UPDATE CASCADE,
    cleared   TEXT NOT NULL,
    PRIMARY KEY (image_id, class_idx)
);
"""

MIGRATIONS: list[str] = [_V1, _V2]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s database to :data:`SCHEMA_VERSION`; return the version it had."""
    from .errors import ProjectError

    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ProjectError(
            f"this project was written by a newer release (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade the tool to open it."
        )
    for v in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {v + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version
