"""The DistributedDataParallel path, on CPU with the gloo backend and 2 processes under torchrun."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, os, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    torch.set_num_threads(1)
    from conftest import make_disc_image
    from segmenter.data import Sample, TrainSet
    from segmenter.models import ModelConfig
    from segmenter.train import TrainConfig, Trainer

    samples = []
    for k in range(6):
        img, gt, scr = make_disc_image(64, seed=k)
        samples.append(Sample(img, name=str(k), scribbles=scr) if k % 2 else Sample(img, name=str(k), mask=gt))
    data = TrainSet.build(samples, 2, 64)
    trainer = Trainer(data, ModelConfig(classes=["bg", "disc"], size=64),
                      TrainConfig(epochs=2, batch_size=2, device="cpu", rounds=2, checkpoint={ck!r}))
    res = trainer.fit()
    checksum = sum(float(p.detach().double().abs().sum()) for p in trainer.model.parameters())
    out = dict(rank=int(os.environ["RANK"]), world_size=res.world_size, steps=res.steps,
               images_seen=res.images_seen, checksum=checksum, rounds=len(res.rounds))
    with open(os.path.join({out!r}, "rank%d.json" % out["rank"]), "w") as f:
        json.dump(out, f)
""")


def test_ddp_two_processes_gloo_cpu(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO), tests=str(REPO / "tests"), ck=str(tmp_path / "ddp"),
                                    out=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["world_size"] for x in ranks] == [2, 2]
    # 6 images, 3 per rank, batch 2: 2 steps per epoch (2 + 1 images); each image once per epoch
    assert ranks[0]["steps"] == 4 and ranks[0]["images_seen"] == 2 * 6
    assert ranks[0]["rounds"] == 1
    # DDP keeps the replicas identical
    assert abs(ranks[0]["checksum"] - ranks[1]["checksum"]) < 1e-6 * ranks[0]["checksum"]
    doc = json.loads((tmp_path / "ddp.json").read_text())  # written by rank 0 only
    assert doc["state"]["epoch"] == 2


def test_train_command_under_torchrun_reports_once(tmp_path):
    """What the README tells a user with several GPUs, on CPU: ``torchrun -m segmenter train``
    trains in 2 processes, writes one checkpoint, and only the first process reports it."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_disc_image

    from annotations.imageio import encode_image_png
    from annotations.store import Project

    with Project.create(tmp_path / "proj", classes=["bg", "disc"]) as p:
        for k in range(6):
            img, gt, scr = make_disc_image(64, seed=k)
            info = p.add_image(encode_image_png(img), name=f"d{k}.png")
            if k % 2:
                p.save_mask(info.id, gt, "final", source="test")
            else:
                p.save_scribbles(info.id, scr)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "segmenter",
           "train", str(tmp_path / "proj"), "--size", "64", "--epochs", "2", "--batch-size", "2", "--name", "m",
           "--device", "cpu", "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [line for line in r.stdout.splitlines() if line.startswith("model ")]
    assert len(reports) == 1 and "m.safetensors" in reports[0], r.stdout
    assert sorted(x.name for x in (tmp_path / "proj" / "models").iterdir()) == ["m.json", "m.safetensors"]
