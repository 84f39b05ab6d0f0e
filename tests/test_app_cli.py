"""``python app.py``: arguments, the localhost-only default, and that the page builds."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from segmenter.benchmarks.app import free_port

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("app_main", REPO / "app.py")
app_main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app_main)


def test_defaults_bind_localhost_without_auth():
    args = app_main.build_parser().parse_args([])
    assert args.host == "127.0.0.1" and args.project is None and args.auth is None
    assert app_main.check_args(args) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "example.org", "::"])
def test_other_addresses_need_auth(host):
    args = app_main.build_parser().parse_args(["--host", host])
    with pytest.raises(ValueError, match="--auth"):
        app_main.check_args(args)
    args = app_main.build_parser().parse_args(["--host", host, "--auth", "ann:secret"])
    assert app_main.check_args(args) == ("ann", "secret")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_addresses_need_no_auth(host):
    assert app_main.is_loopback(host)


@pytest.mark.parametrize("bad", ["nopass", ":x", "user:", ""])
def test_bad_auth(bad):
    with pytest.raises(ValueError):
        app_main.parse_auth(bad)


def test_refuses_public_host_without_auth_from_the_command_line():
    r = subprocess.run([sys.executable, str(REPO / "app.py"), "--host", "0.0.0.0"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 2 and "--auth" in r.stderr and "Traceback" not in r.stderr


def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, str(REPO / "app.py"), str(tmp_path / "p"), "--port", str(port)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"port {port} on 127.0.0.1 is in use" in r.stderr and "--port" in r.stderr


def test_page_builds(tmp_path):
    from annotations.store import Project
    from app.ui import build_ui, css

    demo = build_ui(Project.create(tmp_path / "p"))
    cfg = demo.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in cfg["components"]}
    for needed in ("ws-canvas", "ws-image-list", "ws-train", "ws-export", "ws-next", "ws-next-uncertain"):
        assert needed in ids
    assert ".ws-stage" in css()


def test_auth_protects_the_page_and_the_canvas_api(tmp_path):
    """With --auth, nothing (config, canvas server functions) answers before a login."""
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), str(tmp_path / "p"), "--port", str(port),
                             "--auth", "ann:secret"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def code(url, data=None, headers=None, opener=urllib.request.urlopen):
        try:
            return opener(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "the app did not start"
                time.sleep(0.5)
        assert code(base + "/config") == 401
        body = json.dumps({"session_hash": "x", "component_id": 1, "fn_name": "canvas_save", "data": {}}).encode()
        assert code(base + "/gradio_api/component_server", body, {"Content-Type": "application/json"}) == 401
        login = urllib.parse.urlencode({"username": "ann", "password": "wrong"}).encode()
        assert code(base + "/login", login) == 400
        import http.cookiejar

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())).open
        login = urllib.parse.urlencode({"username": "ann", "password": "secret"}).encode()
        assert code(base + "/login", login, opener=opener) == 200
        assert code(base + "/config", opener=opener) == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_layer_choice_follows_the_imported_strokes(tmp_path):
    """An imported dataset's strokes live in a layer named after its set: the app opens that layer
    (and says so) when 'default' has none, also for a project opened from the page; --layer wins;
    an empty name is refused."""
    import numpy as np

    from annotations.imageio import encode_image_png
    from annotations.store import Project
    from app import handlers

    p = Project.create(tmp_path / "p")
    assert handlers.choose_layer(p, None) == ("default", "")
    img = np.zeros((16, 16, 3), np.uint8)
    iid = p.add_image(encode_image_png(img), name="a.png").id
    strokes = np.full((16, 16), 255, np.uint8)
    strokes[2:4, 2:10] = 1
    p.save_scribbles(iid, strokes, layer="real")
    layer, note = handlers.choose_layer(p, None)
    assert layer == "real" and "'real'" in note and "--layer" in note
    assert handlers.choose_layer(p, "real") == ("real", "")
    layer, note = handlers.choose_layer(p, "reel")  # a new layer or a typo: said, with where the strokes are
    assert layer == "reel" and "'reel' is new (no strokes yet)" in note and "'real'" in note
    with pytest.raises(ValueError, match="--layer"):
        handlers.choose_layer(p, "  ")
    # a project opened from the page gets the same choice, and the page names the layer
    p.close()
    opened = handlers.open_project(str(tmp_path / "p"))
    assert opened.scribble_layer == "real" and "scribble layer `real`" in handlers.project_line(opened)
    opened.save_scribbles(iid, strokes, layer="default")
    assert handlers.choose_layer(opened, None) == ("default", "")
    assert "scribble layer" not in handlers.project_line(Project.open(tmp_path / "p"))
    opened.close()


def test_the_app_draws_in_the_chosen_layer(tmp_path, monkeypatch):
    """With ``scribble_layer`` set (app.py --layer), the canvas loads, saves, undoes and trains on
    that layer; the other layers are left alone."""
    import numpy as np

    from annotations.imageio import encode_image_png
    from annotations.store import Project
    from app import canvas, handlers

    p = Project.create(tmp_path / "p")
    iid = p.add_image(encode_image_png(np.zeros((16, 16, 3), np.uint8)), name="a.png").id
    real = np.full((16, 16), 255, np.uint8)
    real[2:4, 2:10] = 1
    p.save_scribbles(iid, real, layer="real")
    p.scribble_layer = "real"
    tok = handlers.register_project(p)
    msg = handlers.load_message(p, tok, iid)
    assert np.array_equal(canvas.rle_decode(msg["labels"], (16, 16)), real) and msg["version"] == 1
    more = real.copy()
    more[10:12, 2:10] = 0
    assert p.save_scribbles(iid, more, expected_version=1) == 2
    assert np.array_equal(p.scribbles(iid, layer="real"), more) and p.scribbles(iid, layer="default") is None
    assert p.undo_scribbles(iid) == 1 and p.scribble_version(iid, "real") == 1
    assert p.redo_scribbles(iid) == 2
    # the app's training job reads the same layer
    import segmenter.data
    from app import training

    seen = {}

    class Stop(Exception):
        pass

    def spy(project, ids, layer="default", **kw):
        seen["layer"] = layer
        raise Stop

    class Job:
        def report(self, **kw):
            pass

    monkeypatch.setattr(segmenter.data, "ProjectSamples", spy)
    with pytest.raises(Stop):
        training.train_target(p, epochs=1, size=64)(Job())
    assert seen["layer"] == "real"
