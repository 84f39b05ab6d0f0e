"""The demo project: sample photos that ship inside scikit-image, so a fresh machine needs no download.

``python app.py`` without a project opens (or first creates) ``$XDG_DATA_HOME/weakseg/demo``
(``~/.local/share/weakseg/demo`` by default) with the classes ``background`` and ``object``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from annotations.imageio import encode_image_png
from annotations.store import Project

#: (skimage.data function, file name); each has one clear foreground object or a set of objects.
DEMO_IMAGES = (
    ("coins", "coins.png"),
    ("astronaut", "astronaut.png"),
    ("coffee", "coffee.png"),
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.png"),
    ("camera", "camera.png"),
    ("immunohistochemistry", "immunohistochemistry.png"),
    ("clock", "clock.png"),
)
DEMO_CLASSES = ("background", "object")


def data_home() -> Path:
    """``$XDG_DATA_HOME/weakseg`` (default ``~/.local/share/weakseg``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "weakseg"


def browser_secret() -> str | None:
    """The key the page's browser-kept state (the last image and project) is sealed with, kept in
    ``data_home()/browser-secret`` (mode 0600) so that a restarted server still reads what the
    browser kept (Gradio's default is a new random key at every start: a reload after a restart
    forgot the image and project open). ``None`` (Gradio's own) when it cannot be kept."""
    import secrets

    path = data_home() / "browser-secret"
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 32:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    key = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key + "\n")
    except OSError:
        return None
    return key


def demo_path() -> Path:
    return data_home() / "demo"


def demo_images() -> list[tuple[str, np.ndarray]]:
    """``[(file name, image)]`` of the bundled samples that load here (``(H, W[, 3])`` uint8)."""
    from skimage import data

    out = []
    for fn, name in DEMO_IMAGES:
        try:
            img = np.asarray(getattr(data, fn)())
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        out.append((name, np.ascontiguousarray(img)))
    return out


def build_demo(path: str | os.PathLike | None = None) -> Project:
    """Open the demo project at ``path`` (default :func:`demo_path`), creating and filling it first
    if needed. Images already there are not added twice."""
    root = Path(path) if path is not None else demo_path()
    project = Project.open_or_create(root, classes=list(DEMO_CLASSES))
    if not project.image_ids():
        for name, img in demo_images():
            project.add_image(encode_image_png(img), name=name)
    return project
