"""Errors raised by the project store and the format readers.

Every error carries a message written for a person: it names the file, image or class at fault
and says what to do. The CLI prints ``str(err)`` on one line and exits with code 2; the app shows
it in the page.
"""


class AnnotationError(Exception):
    """Base class for every error the store or a format reports to a user."""


class ImageError(AnnotationError):
    """An image file cannot be read: missing, empty, truncated, not an image, or too large."""


class LabelMapError(AnnotationError):
    """A scribble or mask map does not fit its image or the project's classes."""


class DuplicateImageError(AnnotationError):
    """The same image content is already in the project; ``existing`` names the image it matches."""

    def __init__(self, message: str, existing: str = ""):
        super().__init__(message)
        self.existing = existing


class StaleWriteError(AnnotationError):
    """A save was based on an older version than the one now stored (another writer saved first)."""


class NotFoundError(AnnotationError):
    """An image, class or mask the caller named does not exist."""


class ClassInUseError(AnnotationError):
    """A class still has annotations; deleting it needs ``force=True``. For a caller's own wording:
    ``class_name`` names it, ``uses`` says what uses it (``"10 scribble maps and 1 mask"``),
    ``effects`` what a forced delete does (``"its pixels become unlabelled"``)."""

    def __init__(self, message: str, class_name: str = "", uses: str = "", effects: str = ""):
        super().__init__(message)
        self.class_name = class_name
        self.uses = uses
        self.effects = effects


class ProjectError(AnnotationError):
    """The project folder or database is missing, unreadable or of a newer schema."""


def database_busy(err: BaseException) -> str | None:
    """A sentence for SQLite's "database is locked" (another program held the project's database
    for longer than the 30 s a write waits), else ``None`` (another failure)."""
    import sqlite3

    text = str(err).lower()
    if isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return ("the project's database is busy: another program has been writing to it for 30 s (a long "
                "command, a sqlite3 shell or backup tool holding it, a command stopped with Ctrl+Z); nothing "
                "was written. Try again when it is done.")
    return None
