"""``python -m segmenter bench app``: the served app under concurrent annotators (latency, lost writes)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segmenter.benchmarks import app as bench_app
from segmenter.benchmarks import latency

REPO = Path(__file__).resolve().parents[1]
NONE = 255


def test_lost_strokes_counts_missing_pixels_not_own_overwrites():
    shapes = {1: (8, 8), 2: (8, 8)}
    a = (1, np.array([0, 0]), np.array([1, 2]), 1)
    b = (1, np.array([0]), np.array([2]), 0)          # the same annotator later draws over a's (0, 2)
    c = (2, np.array([3, 3]), np.array([4, 5]), 1)
    stored = {1: np.full((8, 8), NONE, np.uint8), 2: np.full((8, 8), NONE, np.uint8)}
    stored[1][0, 1], stored[1][0, 2] = 1, 0
    stored[2][3, 4:6] = 1
    assert bench_app.lost_strokes(stored, [a, b, c], shapes) == 0
    stored[2][3, 5] = NONE                             # one pixel of c gone
    assert bench_app.lost_strokes(stored, [a, b, c], shapes) == 1
    assert bench_app.lost_strokes({1: stored[1], 2: None}, [a, b, c], shapes) == 1
    stored[1][0, 2] = 1                                # b's pixel holds a's old class: b is lost
    assert bench_app.lost_strokes(stored, [a, b, c], shapes) == 2


def test_concurrent_annotators_lose_nothing_through_the_served_app():
    rep = bench_app.measure(latency.synthetic_samples(2, 64), 2, annotators=3, strokes=6, pause=0.0, preview=True,
                            undo_every=3)
    assert rep["task"] == "app" and rep["annotators"] == 3 and rep["images"] == 2
    assert rep["errors"] == 0, rep["first_error"]
    assert rep["saves"] == 18 and rep["undos"] > 0 and rep["lost_writes"] == 0
    assert 0 < rep["p50_s"] <= rep["p95_s"] and 0 < rep["preview_p50_s"] <= rep["preview_p95_s"]


def test_watching_tabs_ask_the_served_app_while_annotators_draw(monkeypatch):
    """``--tabs``: open pages that only watch for training jobs post the page's own timer event
    (every WATCH_SECONDS) while the annotators draw; their latency is reported."""
    import app.ui

    monkeypatch.setattr(app.ui, "WATCH_SECONDS", 0.2)
    rep = bench_app.measure(latency.synthetic_samples(1, 64), 2, annotators=2, strokes=6, pause=0.1, preview=False,
                            tabs=3)
    assert rep["errors"] == 0, rep["first_error"]
    assert rep["tabs"] == 3 and rep["watches"] >= 3 and 0 < rep["watch_p50_s"] <= rep["watch_p95_s"]
    assert rep["lost_writes"] == 0 and rep["saves"] == 12


def test_a_last_writer_wins_save_is_caught_as_lost_writes(monkeypatch):
    """Without the app's merge of concurrent edits, the benchmark reports the strokes it drops."""
    from app import handlers

    def overwrite(project, image_id, labels, base_version, author=None, retries=8):
        return project.save_scribbles(image_id, labels, author=author), None

    monkeypatch.setattr(handlers, "save_scribbles_merged", overwrite)
    rep = bench_app.measure(latency.synthetic_samples(1, 64), 2, annotators=3, strokes=3, pause=0.0, preview=False)
    assert rep["errors"] == 0 and rep["saves"] == 9
    assert rep["lost_writes"] > 0


def test_bench_app_command_writes_the_report(tmp_path):
    out = tmp_path / "app.json"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    r = subprocess.run([sys.executable, "-m", "segmenter", "bench", "app", "--data", str(tmp_path / "none"),
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "none" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "segmenter", "bench", "app", "--annotators", "2", "--strokes", "2",
                        "--images", "1", "--size", "48", "--pause", "0", "--no-preview", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["saves"] == 4 and rep["lost_writes"] == 0 and rep["size"] == 48
    assert "lost writes 0" in r.stdout


@pytest.mark.parametrize("argv, words", [(["--annotators", "0"], "at least 1"), (["--size", "8"], "16"),
                                         (["--images", "1", "--size", "16", "--annotators", "20"], "too small"),
                                         (["--tabs", "-1"], "--tabs")])
def test_bench_app_refuses_bad_settings(argv, words):
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    r = subprocess.run([sys.executable, "-m", "segmenter", "bench", "app", *argv], cwd=REPO, capture_output=True,
                       text=True, env=env, timeout=180)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
