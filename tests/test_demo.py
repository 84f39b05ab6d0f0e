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
