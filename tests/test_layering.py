"""Imports point one way: app -> segmenter -> annotations. annotations/ never loads torch or gradio;
segmenter/ never loads gradio. Checked in a fresh interpreter over every module of each package."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CHECK = """
import importlib, pkgutil, sys
pkg = importlib.import_module({pkg!r})
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
bad = [name for name in {forbidden!r} if name in sys.modules]
print(",".join(bad))
"""


def _loaded(pkg: str, forbidden: list[str]) -> str:
    r = subprocess.run([sys.executable, "-c", CHECK.format(pkg=pkg, forbidden=forbidden)], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_annotations_imports_neither_torch_nor_gradio():
    assert _loaded("annotations", ["torch", "gradio", "segmenter", "app"]) == ""


def test_segmenter_never_imports_gradio_or_app():
    assert _loaded("segmenter", ["gradio", "app"]) == ""
