"""``scripts/device_check.py``: the GPU session's one-run check, exercised here on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def test_the_synthetic_dataset_is_a_folder_dataset(tmp_path):
    import device_check

    from annotations.folder import FolderDataset

    ds = FolderDataset.open(device_check.make_dataset(tmp_path / "d", n=8, size=64))
    assert ds.classes == device_check.CLASSES and len(ds.ids) == 8
    assert len(ds.split("train")) == 6 and len(ds.split("test")) == 2
    for i in ds.ids:
        m, s = ds.mask(i), ds.scribbles("sim", i)
        assert set(map(int, set(m.ravel()))) == {0, 1, 2}
        assert ((s == m) | (s == 255)).all() and (s != 255).any()  # strokes lie inside their class


def test_device_check_passes_on_the_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "device_check.py"), "--device", "cpu", "--epochs", "3",
                        "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    rep = json.loads((tmp_path / "device_check.json").read_text())
    checks = {k: v for k, v in rep.items() if k != "env"}
    assert set(checks) >= {"bench_train_full", "bench_train_simulated", "train", "train_resume", "ddp"}
    assert all(v["ok"] for v in checks.values())
    assert rep["ddp"]["processes"] == 2 and rep["bench_train_full"]["device"] == "cpu"
