"""``python app.py``: arguments, the localhost-only default, and that the page builds."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_page_builds(tmp_path):
    from annotations.store import Project
    from app.ui import build_ui, css

    demo = build_ui(Project.create(tmp_path / "p"))
    cfg = demo.get_config_file()
    ids = {c.get("props", {}).get("elem_id") for c in cfg["components"]}
    for needed in ("ws-canvas", "ws-image-list", "ws-train", "ws-export", "ws-next", "ws-next-uncertain"):
        assert needed in ids
    assert ".ws-stage" in css()
