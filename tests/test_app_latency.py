"""``python -m segmenter bench latency``: the live preview's latency through the app's own function."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from annotations.imageio import encode_image_png, write_label_png
from conftest import make_disc_image
from segmenter.benchmarks import latency

REPO = Path(__file__).resolve().parents[1]


def test_first_half_of_strokes():
    scr = np.full((20, 20), 255, np.uint8)
    scr[2, 2:8] = 0
    scr[10, 2:8] = 1
    scr[17, 2:8] = 1
    half = latency.first_half_of_strokes(scr)
    assert (half != 255).sum() == 6 and (half[2, 2:8] == 0).all()
    one = np.full((5, 5), 255, np.uint8)
    one[2, 2] = 1
    np.testing.assert_array_equal(latency.first_half_of_strokes(one), one)


def test_the_app_previews_with_the_benchmarked_function():
    from app import handlers

    from segmenter.pseudo import preview

    assert handlers.preview_function() is latency.preview_function() is preview


def test_measure_reports_the_contract_keys():
    rep = latency.measure(latency.synthetic_samples(2, 64), 2)
    assert rep["task"] == "latency" and rep["n"] == 4 and rep["size"] == 64 and rep["n_images"] == 2
    assert 0 < rep["p50_s"] <= rep["p95_s"] <= rep["max_s"]
    assert rep["function"] == "segmenter.pseudo.preview"


def test_cli_on_a_folder_dataset_with_simulated_strokes(tmp_path):
    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "meta.json").write_text(json.dumps({"name": "tiny", "classes": ["background", "object"]}))
    for i in range(3):
        img, gt, _ = make_disc_image(80, seed=i)
        (data / "images" / f"d{i}.png").write_bytes(encode_image_png(img))
        write_label_png(data / "masks" / f"d{i}.png", gt)
    out = tmp_path / "lat.json"
    r = subprocess.run([sys.executable, "-m", "segmenter", "bench", "latency", "--data", str(data), "--limit", "2",
                        "--size", "96", "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["task"] == "latency" and rep["n"] == 4 and rep["size"] == 96 and rep["dataset"] == "ds"
    assert "p50" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "segmenter", "bench", "latency", "--data", str(data), "--scribbles",
                          "nope"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no scribble set 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_measure_times_strokes_correcting_a_prediction(monkeypatch, tmp_path):
    """--correct passes each image's mask to the app's preview function as its prediction."""
    from segmenter.pseudo import preview

    seen = []

    def spy(image, scribbles, num_classes, method=None, prediction=None, **kw):
        seen.append(prediction)
        return preview(image, scribbles, num_classes, method=method, prediction=prediction, **kw)

    monkeypatch.setattr(latency, "preview_function", lambda: spy)
    samples = [(img, scr, gt) for img, gt, scr in (make_disc_image(64, seed=i) for i in range(2))]
    rep = latency.measure(samples, 2, correct=True)
    assert rep["correct"] is True and rep["n"] == 4 and rep["p50_s"] > 0
    assert all(p is not None for p in seen) and np.array_equal(seen[-1], samples[-1][2])
    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "meta.json").write_text(json.dumps({"name": "tiny", "classes": ["background", "object"]}))
    img, gt, _ = make_disc_image(80, seed=0)
    (data / "images" / "d0.png").write_bytes(encode_image_png(img))
    (data / "images" / "nomask.png").write_bytes(encode_image_png(img))
    write_label_png(data / "masks" / "d0.png", gt)
    got = list(latency.dataset_samples(data, None, None, 64, with_mask=True))
    assert len(got) == 1 and got[0][2].shape == got[0][1].shape == (64, 64)
