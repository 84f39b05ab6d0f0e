"""Crash safety: a process saving in a loop is SIGKILLed at random moments, 20 times. After each
kill the database passes PRAGMA integrity_check and every acknowledged save reads back identical."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from annotations import imageio
from annotations.store import Project

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from save_loop import payload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KILLS = 20


def test_sigkill_during_saves_loses_no_acknowledged_save(tmp_path):
    root = tmp_path / "proj"
    p = Project.create(root, ["bg", "a", "b"])
    for k in range(3):
        f = tmp_path / f"img{k}.png"
        f.write_bytes(imageio.encode_image_png(np.full((48, 64), k * 50, np.uint8)))
        p.add_image(f)
    p.close()
    rng = random.Random(1234)
    acked: list[tuple[str, int, int, int]] = []
    seed = 0
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    passed = 0
    for run in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "helpers" / "save_loop.py"), str(root),
                                 str(seed)], stdout=subprocess.PIPE, text=True, env=env)
        # Wait for the first acknowledgement so the kill lands inside the save loop, then a random time.
        first = proc.stdout.readline()
        assert first.startswith("ACK"), f"child failed to start: {first!r}"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        lines = [first] + [ln for ln in rest.splitlines() if ln.startswith("ACK") and ln.count(" ") == 4]
        for ln in lines:
            _, kind, i, v, s = ln.split()
            acked.append((kind, int(i), int(v), int(s)))
        seed = acked[-1][3] + 1
        q = Project.open(root)
        try:
            assert q.integrity_check() == "ok"
            for kind, i, v, s in acked:
                info = q.image_info(i)
                expect = payload(s, (info.height, info.width))
                if kind == "scribble":
                    got = q.scribbles(i, version=v)
                else:
                    row = [m for m in q.mask_history(i, "predicted") if m.id == v]
                    assert row, f"acknowledged mask {v} missing after kill {run}"
                    got = imageio.read_label_map(root / row[0].file)
                assert np.array_equal(got, expect), f"save {kind} {i}/{v} differs after kill {run}"
            # The head of every image is readable and the next save still works.
            for i in q.image_ids():
                q.scribbles(i)
        finally:
            q.close()
        passed += 1
    assert passed == KILLS
    assert len(acked) > KILLS


def test_delete_class_failing_midway_changes_nothing(tmp_path, monkeypatch):
    """delete_class rewrites every scribble version and mask under new names and commits the rows
    once: a failure after some files were written leaves every version and mask as it was."""
    p = Project.create(tmp_path / "proj", ["bg", "a", "b"])
    f = tmp_path / "img.png"
    f.write_bytes(imageio.encode_image_png(np.zeros((8, 12), np.uint8)))
    i = p.add_image(f).id
    saved = {}
    for layer in ("default", "real"):
        for k in range(2):
            s = np.full((8, 12), 255, np.uint8)
            s[k, :] = 1
            s[4 + k, :] = 2
            saved[layer, p.save_scribbles(i, s, layer=layer)] = s
    p.save_mask(i, np.full((8, 12), 2, np.uint8), "final", source="test")
    real_write, calls = p._write_file, []

    def failing(rel, data):
        calls.append(rel)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(rel, data)

    monkeypatch.setattr(p, "_write_file", failing)
    with pytest.raises(OSError, match="No space left"):
        p.delete_class("a", force=True)
    monkeypatch.undo()
    assert len(calls) == 3 and p.class_names == ["bg", "a", "b"] and p.integrity_check() == "ok"
    for (layer, v), s in saved.items():
        assert np.array_equal(p.scribbles(i, layer, version=v), s)
    assert (p.mask(i, "final") == 2).all()
    p.delete_class("a", force=True)
    assert all(set(np.unique(p.scribbles(i, layer, version=v))) <= {0, 1, 255} for layer, v in saved)
    p.close()
