"""The demo project built from scikit-image's bundled samples (no download)."""
from __future__ import annotations

from app import demo


def test_demo_project_in_xdg_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert demo.demo_path() == tmp_path / "xdg" / "weakseg" / "demo"
    p = demo.build_demo()
    assert p.root == (tmp_path / "xdg" / "weakseg" / "demo").resolve()
    assert p.class_names == list(demo.DEMO_CLASSES)
    names = [i.name for i in p.images()]
    assert len(names) >= 6 and "coins.png" in names and "astronaut.png" in names
    for i in p.image_ids()[:3]:
        img = p.load_image(i)
        assert img.dtype.name == "uint8" and img.ndim in (2, 3)
    p.close()
    again = demo.build_demo()  # opening again adds nothing
    assert [i.name for i in again.images()] == names
    again.close()


def test_demo_default_location_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert demo.demo_path() == tmp_path / ".local" / "share" / "weakseg" / "demo"


def test_the_pages_browser_state_keeps_one_key_across_server_starts(tmp_path, monkeypatch):
    """The page keeps the last image and project in the browser, sealed with a key: Gradio's was new
    at every server start, so a reload after a restart forgot both (bug hunt 45). The key is kept in
    the data folder (0600) and every build of the page uses it."""
    import os

    import gradio as gr

    from annotations.store import Project
    from app.demo import browser_secret
    from app.ui import build_ui

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    key = browser_secret()
    path = tmp_path / "xdg" / "weakseg" / "browser-secret"
    assert key and len(key) >= 32 and browser_secret() == key and os.stat(path).st_mode & 0o777 == 0o600
    p = Project.create(tmp_path / "p")
    for _ in range(2):  # two server starts
        states = [b for b in build_ui(p).blocks.values() if isinstance(b, gr.BrowserState)]
        assert len(states) == 2 and {b.secret for b in states} == {key}
    path.write_text("short")  # a damaged key file: a new key, kept
    assert browser_secret() not in (None, key, "short") and len(path.read_text().strip()) == 64
