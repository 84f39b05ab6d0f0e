"""Start the annotation app in the browser.

    python app.py [PROJECT] [--host 127.0.0.1] [--port 7860] [--auth user:pass]

Without PROJECT it opens (creating it the first time) a demo project of sample images that ship
with scikit-image, in ``$XDG_DATA_HOME/weakseg/demo`` (``~/.local/share/weakseg/demo``). The app
listens on 127.0.0.1 only, unless ``--host`` names another address, which requires ``--auth``.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:pass"`` -> ``("user", "pass")``; raises ValueError with a readable message."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must be USER:PASSWORD, both non-empty.")
    return user, password


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description=__doc__.split("\n\n")[0])
    p.add_argument("project", nargs="?", default=None,
                   help="project folder (created if missing); default: the demo project")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login (needed off localhost)")
    p.add_argument("--classes", default="background,object",
                   help="classes of a new project, comma-separated (default: background,object)")
    p.add_argument("--layer", default=None,
                   help="scribble layer to draw in and train on (default: 'default', or, when it has no strokes, "
                        "the project's first other layer, e.g. a dataset's imported set)")
    return p


def check_args(args) -> tuple[str, str] | None:
    """Validates host/auth; returns the auth tuple. Raises ValueError with a message for a person."""
    auth = parse_auth(args.auth)
    if not is_loopback(args.host) and auth is None:
        raise ValueError(f"listening on {args.host} makes the app reachable from other machines; "
                         "add --auth USER:PASSWORD (or use --host 127.0.0.1).")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, not {args.port}.")
    return auth


def port_in_use(host: str, port: int) -> bool:
    """True when nothing can listen on ``host:port`` now (another app, a server still running)."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a closed one's port is free
            s.bind((host, port))
    except OSError:
        return True
    return False


def busy_port_message(host: str, port: int) -> str:
    return (f"app.py: error: port {port} on {host} is in use (another app, or this one still running); "
            f"choose another with --port (e.g. --port {port + 1}), or stop the other one.")


def open_project(path: str | None, classes: str):
    from annotations.store import Project
    from app.demo import build_demo

    if path is None:
        return build_demo()
    names = [c.strip() for c in classes.split(",") if c.strip()]
    return Project.open_or_create(path, classes=names or None)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        auth = check_args(args)
    except ValueError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    if port_in_use(args.host, args.port):
        print(busy_port_message(args.host, args.port), file=sys.stderr)
        return 2
    from annotations.errors import AnnotationError

    try:
        project = open_project(args.project, args.classes)
    except AnnotationError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    from app.handlers import choose_layer

    try:
        project.scribble_layer, note = choose_layer(project, args.layer)
    except ValueError as e:
        print(f"app.py: error: {e}", file=sys.stderr)
        return 2
    if note:
        print(note)
    import threading

    from app.handlers import warm_up
    from app.ui import build_ui, launch

    demo = build_ui(project)
    threading.Thread(target=warm_up, name="weakseg-warm-up", daemon=True).start()
    print(f"project: {project.root}  ({len(project.image_ids())} images)")
    try:
        launch(demo, args.host, args.port, auth)
    except OSError as e:  # taken between the check and now
        if "port" not in str(e).lower():
            raise
        print(busy_port_message(args.host, args.port), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
