"""``python -m segmenter``: the command line.

Sub-commands live in :mod:`segmenter.commands`, one module each; a module there exposes
``register(subparsers)`` which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code or ``None``). Modules are discovered, so adding a command touches no
shared file. Benchmarks are ``bench <name>``, discovered the same way in
:mod:`segmenter.benchmarks`.

Bad input never shows a stack trace: errors the user can fix print one line naming the problem
and exit with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys

from annotations.errors import AnnotationError, database_busy


class UsageError(AnnotationError):
    """A command-line argument is wrong; the message names it."""


def _discover(package: str):
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segmenter",
        description="Weakly-supervised segmentation: scribbles and tags in, refined masks out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _discover("segmenter.commands"):
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except AnnotationError as e:  # includes SegmenterError and UsageError
        msg = " ".join(str(e).split())
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as e:  # another program held the project's database too long
        busy = database_busy(e)
        if busy is None:
            raise
        print(f"error: {busy}", file=sys.stderr)
        return 2
    return int(rc or 0)
