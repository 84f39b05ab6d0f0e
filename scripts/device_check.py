"""The GPU path in one short run: for a session lent a GPU machine (see ``scripts/device_check.sh``).

::

    python3 scripts/device_check.py [--device cuda] [--out DIR] [--epochs 8]

Everything runs through the command line a user runs, on a synthetic three-class folder dataset
made here (no dataset travels): ``bench train`` with ``full`` and ``simulated`` supervision
(mixed precision on the GPU, the bare smp loop timed beside it); a project imported from that
dataset, ``train`` on its strokes, ``train --resume`` of the same checkpoint, ``predict --tta``
and ``predict --mode tile``; and the DistributedDataParallel path under ``torchrun`` (NCCL on a GPU,
one process per visible GPU, at least one). Each check prints ``PASS`` or ``FAIL`` with its
figures; ``DIR/device_check.json`` holds them all. Exit code 1 if any check failed.

With ``--device cpu`` the same checks run on the CPU (how the script itself is tested here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLASSES = ["background", "disc", "bar"]


def make_dataset(root: Path, n: int = 96, size: int = 96, seed: int = 0) -> Path:
    """A folder dataset of noisy discs and bars on a textured background, with simulated strokes."""
    import cv2

    from segmenter.simulate import SimulationConfig, simulate_scribbles

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks", "scribbles/sim", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    colours = np.array([[70, 90, 60], [200, 120, 60], [80, 80, 210]], np.float32)  # per class
    ids = []
    for i in range(n):
        gt = np.zeros((size, size), np.uint8)
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        cv2.circle(gt, (int(cx), int(cy)), int(rng.integers(size // 8, size // 4)), 1, -1)
        y0 = int(rng.integers(0, size - size // 6))
        bar = gt[y0:y0 + size // 8, size // 10:size - size // 10]  # a view: the bar behind the disc
        bar[bar == 0] = 2
        img = colours[gt] + rng.normal(0, 18, (size, size, 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        name = f"s{i:03d}"
        ids.append(name)
        cv2.imwrite(str(root / "images" / f"{name}.png"), img[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{name}.png"), gt)
        scr = simulate_scribbles(gt, len(CLASSES), SimulationConfig(seed=i))
        cv2.imwrite(str(root / "scribbles" / "sim" / f"{name}.png"), scr)
    k = int(n * 0.75)
    (root / "splits" / "train.txt").write_text("\n".join(ids[:k]) + "\n")
    (root / "splits" / "test.txt").write_text("\n".join(ids[k:]) + "\n")
    (root / "meta.json").write_text(json.dumps({"name": "device-check", "classes": CLASSES, "ignore_index": 255}))
    return root


def sh(cmd: list[str], timeout: int = 600, env: dict | None = None) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    return r.returncode, (r.stdout + r.stderr)[-3000:], time.perf_counter() - t0


DDP_WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    from annotations.folder import FolderDataset
    from segmenter.data import Sample, TrainSet
    from segmenter.models import ModelConfig
    from segmenter.train import TrainConfig, Trainer

    ds = FolderDataset.open({data!r})
    samples = [Sample(ds.image(i), name=i, mask=ds.mask(i)) for i in ds.split("train")]
    data = TrainSet.build(samples, len(ds.classes), 64)
    trainer = Trainer(data, ModelConfig(classes=ds.classes, size=64),
                      TrainConfig(epochs=2, batch_size=4, device={device!r}, rounds=1))
    res = trainer.fit()
    checksum = sum(float(p.detach().double().abs().sum()) for p in trainer.model.parameters())
    with open(os.path.join({out!r}, "ddp_rank%s.json" % os.environ["RANK"]), "w") as f:
        json.dump(dict(world_size=res.world_size, steps=res.steps, checksum=checksum,
                       loss=res.history[-1].get("loss") if res.history else None), f)
""")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=os.environ.get("OUT") or "device-check-out")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    results: dict = {"env": {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                             "gpus": torch.cuda.device_count(), "device": args.device}}
    if torch.cuda.is_available():
        results["env"].update(name=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported())
    print("env", results["env"], flush=True)
    failed = []

    def check(name: str, ok: bool, **figures):
        results[name] = dict(ok=bool(ok), **figures)
        print(("PASS " if ok else "FAIL ") + name, json.dumps(figures, default=str)[:1500], flush=True)
        if not ok:
            failed.append(name)

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data")
        common = ["--data", str(data), "--train-split", "train", "--test-split", "test", "--epochs",
                  str(args.epochs), "--size", "64", "--seed", "0", "--device", args.device]
        for sup in ("full", "simulated"):
            rep = tmp / f"bench_{sup}.json"
            rc, log, secs = sh([py, "-m", "segmenter", "bench", "train", *common, "--supervision", sup,
                                "--out", str(rep)])
            r = json.loads(rep.read_text()) if rep.is_file() else {}
            check(f"bench_train_{sup}", rc == 0 and r.get("test_miou", 0) > 0.4 and r.get("device", "").startswith(
                args.device.split(":")[0]), seconds=round(secs, 1), **{k: r.get(k) for k in (
                    "test_miou", "images_per_s", "bare_images_per_s", "train_seconds", "device")},
                  log=None if rc == 0 else log)

        proj = tmp / "proj"
        rc, log, _ = sh([py, "-m", "segmenter", "import", str(proj), str(data), "--create"])
        check("import", rc == 0, log=None if rc == 0 else log)
        train = [py, "-m", "segmenter", "train", str(proj), "--layer", "sim", "--imported-as", "coarse",
                 "--epochs", "2", "--size", "64", "--device", args.device, "--quiet"]
        rc, log, secs = sh(train + ["--name", "check"])
        check("train", rc == 0, seconds=round(secs, 1), log=log[-600:])
        models = sorted((proj / "models").glob("*.safetensors")) if (proj / "models").is_dir() else []
        if models:
            rc, log, secs = sh(train[:-1] + ["--epochs", "3", "--resume", str(models[-1]), "--quiet"])
            check("train_resume", rc == 0, seconds=round(secs, 1), log=log[-600:])
        else:
            check("train_resume", False, log="no checkpoint under models/ after train")
        for extra in (["--tta"], ["--mode", "tile"]):
            rc, log, secs = sh([py, "-m", "segmenter", "predict", str(proj), "--device", args.device, *extra])
            check("predict " + " ".join(extra), rc == 0, seconds=round(secs, 1), log=log[-600:])

        n = max(1, torch.cuda.device_count()) if args.device.startswith("cuda") else 2
        worker = tmp / "ddp_worker.py"
        worker.write_text(DDP_WORKER.format(repo=str(REPO), data=str(data), device=args.device.split(":")[0],
                                            out=str(tmp)))
        rc, log, secs = sh([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                            str(worker)], env={"OMP_NUM_THREADS": "1"})
        ranks = [json.loads(p.read_text()) for p in sorted(tmp.glob("ddp_rank*.json"))]
        same = len({round(r["checksum"], 3) for r in ranks}) == 1 if ranks else False
        check("ddp", rc == 0 and len(ranks) == n and same and all(r["world_size"] == n for r in ranks),
              processes=n, seconds=round(secs, 1), ranks=ranks, log=None if rc == 0 else log)

    (out / "device_check.json").write_text(json.dumps(results, indent=2, default=str))
    print("device check:", "all passed" if not failed else "FAILED: " + ", ".join(failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
