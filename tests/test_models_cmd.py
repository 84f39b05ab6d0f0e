"""``python -m segmenter models``: a project's trained models listed, slimmed and deleted.

Every training run left a 229 MB checkpoint (weights, optimiser state, EMA teacher) in
``models/`` and nothing listed or removed them (bug hunt 45)."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from annotations.store import Project
from segmenter.cli import main
from segmenter.models import (ModelConfig, checkpoint_paths, create_model, latest_checkpoint, load_checkpoint,
                              save_checkpoint)
from segmenter.predict import resolve_model

CLASSES = ["background", "horse"]


def _checkpoint(path, classes=CLASSES, resumable=True):
    """A small model saved as training saves it: with AdamW's state after one step and a teacher."""
    torch.manual_seed(0)
    cfg = ModelConfig(classes=list(classes), encoder="resnet18", size=64)
    model = create_model(cfg)
    opt = teacher = None
    if resumable:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        out = model(torch.rand(2, 3, 64, 64))
        (out[0] if isinstance(out, tuple) else out).mean().backward()
        opt.step()
        teacher = copy.deepcopy(model)
    save_checkpoint(path, model, cfg, optimizer=opt, teacher=teacher, state={"epoch": 2})
    time.sleep(0.01)  # distinct saved times
    return checkpoint_paths(path)[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    p = Project.create(root / "p", CLASSES)
    p.models_dir.mkdir(exist_ok=True)
    _checkpoint(p.models_dir / "first")
    _checkpoint(p.models_dir / "second")
    _checkpoint(p.models_dir / "other", classes=["background", "horse", "rider"])  # newest, other classes
    (p.models_dir / "broken.json").write_text(json.dumps({"format": "weakseg-checkpoint", "config": {"classes": CLASSES}}))
    return p


def test_list_marks_the_model_in_use_and_names_what_each_holds(project, capsys):
    assert main(["models", str(project.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("4 model(s) in ") and "MB" in out[0]
    rows = {line[2:].split()[0]: line for line in out[1:]}
    assert rows["second"].startswith("* ") and not rows["first"].startswith("*")  # the newest fitting one
    assert "resumable" in rows["first"] and "unet/resnet18 64 px, 2 epoch(s)" in rows["first"]
    assert "other classes: background, horse, rider" in rows["other"]
    assert "unusable: the weights (.safetensors) are missing" in rows["broken"]
    assert resolve_model(project, None) == project.models_dir / "second.safetensors"


def test_slim_drops_the_optimiser_and_teacher_and_keeps_the_model(project, capsys, tmp_path):
    path = project.models_dir / "first.safetensors"
    before = load_checkpoint(path, CLASSES)
    size = path.stat().st_size
    used = resolve_model(project, None)
    assert main(["models", str(project.root), "--slim", "first"]) == 0
    assert "slimmed 1 model(s)" in capsys.readouterr().out
    after = load_checkpoint(path, CLASSES)
    assert path.stat().st_size < size / 3  # weights alone: a quarter of what was there
    assert after.optimizer_state() is None and after.teacher_state() is None
    assert after.config.version == before.config.version  # the same weights, the same version
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ya, yb = before.model(x), after.model(x)
    ya, yb = (ya[0], yb[0]) if isinstance(ya, tuple) else (ya, yb)
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert resolve_model(project, None) == used  # slimming an older model does not make it the newest
    assert main(["models", str(project.root), "--slim", "first"]) == 0
    assert "slimmed 0 model(s), 0.0 MB freed; 1 had no optimiser state to drop." in capsys.readouterr().out


def test_the_newest_model_is_found_by_its_saved_time_not_the_file_times(project):
    """A copied project folder (or a class rename rewriting the JSONs) gives every file a new
    mtime: the model in use went by the JSON's mtime."""
    for k, name in enumerate(["second", "first", "other"]):  # the oldest file times for the newest models
        os.utime(project.models_dir / f"{name}.json", (1000 + k, 1000 + k))
    assert resolve_model(project, None) == project.models_dir / "second.safetensors"
    assert latest_checkpoint(project.models_dir) == project.models_dir / "other.safetensors"


def test_delete_checks_every_name_first_and_keep_spares_the_model_in_use(tmp_path, capsys):
    p = Project.create(tmp_path / "p", CLASSES)
    p.models_dir.mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        _checkpoint(p.models_dir / name, resumable=False)
    _checkpoint(p.models_dir / "d", classes=["x", "y"], resumable=False)
    assert main(["models", str(p.root), "--delete", "a", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no model 'nope' in the project; it has: a, b, c, d" in err and "Traceback" not in err
    assert (p.models_dir / "a.safetensors").is_file()  # nothing removed
    assert main(["models", str(p.root), "--delete", "a.safetensors"]) == 0
    assert "deleted 1 model(s): a, " in capsys.readouterr().out
    assert not (p.models_dir / "a.safetensors").exists() and not (p.models_dir / "a.json").exists()
    assert main(["models", str(p.root), "--keep", "0"]) == 0  # c is the one predict uses: it stays
    assert "deleted 2 model(s): b, d" in capsys.readouterr().out
    assert sorted(f.name for f in p.models_dir.iterdir()) == ["c.json", "c.safetensors"]
    assert main(["models", str(p.root), "--delete", "c"]) == 0
    assert "no model is left for the project's classes: 'train' makes one" in capsys.readouterr().out
    assert main(["models", str(p.root)]) == 0
    assert "no trained model in " in capsys.readouterr().out
    assert main(["models", str(p.root), "--keep", "-1"]) == 2
    assert "--keep must be a whole number >= 0" in capsys.readouterr().err


@contextlib.contextmanager
def _training_elsewhere(checkpoint):
    """Another process marked as training ``checkpoint`` (:func:`segmenter.models.mark_training`)
    until the block ends; then it dies without clearing its mark, as a killed training does."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; from segmenter.models import mark_training; "
                              f"mark_training({str(checkpoint)!r}, 'the command line'); "
                              "print('ok', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert child.stdout.readline().strip() == "ok"
        yield
    finally:
        child.kill()
        child.wait()


def test_a_training_under_way_is_named_to_another_one(tmp_path, capsys):
    """The app started a training while one ran from the command line, without a word (bug hunt
    47, #10). A training marks itself in models/ while it runs; another one started meanwhile is
    told (the mark of a process that died is cleared)."""
    from segmenter.models import mark_training, trainings_note, trainings_running, unmark_training

    folder = tmp_path / "models"
    mine = mark_training(folder / "here", "the app")
    assert trainings_running(folder) == []  # this process's own training is not another one
    with _training_elsewhere(folder / "cli-run"):
        runs = trainings_running(folder)
        assert [(r["model"], r["where"]) for r in runs] == [("cli-run", "the command line")]
        note = trainings_note(folder)
        assert note.startswith("another training of this project is under way (model cli-run from the command "
                               "line, since ") and note.endswith("each takes longer.")
    assert trainings_running(folder) == [] and not (folder / ".training-cli-run.lock").exists()  # died: cleared
    unmark_training(mine)
    assert not mine.exists()


def test_a_model_being_trained_is_not_slimmed_or_deleted(tmp_path, capsys):
    """Deleting or slimming the model a training writes every epoch: the training wrote it back (or
    failed); the command now refuses that model by name and spares it in --keep and a bare --slim."""
    p = Project.create(tmp_path / "p", CLASSES)
    p.models_dir.mkdir(exist_ok=True)
    _checkpoint(p.models_dir / "old", resumable=False)
    _checkpoint(p.models_dir / "run", resumable=True)
    with _training_elsewhere(p.models_dir / "run"):
        assert main(["models", str(p.root), "--delete", "run"]) == 2
        assert "model run is being trained (from the command line, since " in capsys.readouterr().err
        assert main(["models", str(p.root), "--slim", "run"]) == 2
        assert "nothing was slimmed" in capsys.readouterr().err
        assert main(["models", str(p.root)]) == 0
        assert "being trained (from the command line" in capsys.readouterr().out
        assert main(["models", str(p.root), "--keep", "0"]) == 0
        assert (p.models_dir / "run.safetensors").is_file()
        assert main(["models", str(p.root), "--slim"]) == 0
        assert load_checkpoint(p.models_dir / "run.safetensors", CLASSES).optimizer_state() is not None


def test_keep_counts_only_models_and_never_removes_more_than_it_must(tmp_path, capsys):
    """--keep 5 with 3 models deleted the oldest (a negative slice); junk .json files counted among
    the newest N, so good models went and a user's notes.json could go too; the '*' sat on a model
    for other classes that predict refuses; a cut-short weights file was 'usable' and --slim said it
    'had no optimiser state' (bug hunt 48, #1, #2, #7, #8)."""
    p = Project.create(tmp_path / "p", CLASSES)
    p.models_dir.mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        _checkpoint(p.models_dir / name, resumable=False)
    assert main(["models", str(p.root), "--keep", "5"]) == 0
    assert "deleted 0 model(s)" in capsys.readouterr().out
    assert sorted(f.stem for f in p.models_dir.glob("*.safetensors")) == ["a", "b", "c"]
    (p.models_dir / "notes.json").write_text('{"mine": 1}')  # the user's file, no checkpoint
    assert main(["models", str(p.root), "--keep", "2"]) == 0
    assert "deleted 1 model(s): a," in capsys.readouterr().out
    assert (p.models_dir / "notes.json").is_file() and (p.models_dir / "b.safetensors").is_file()
    cut = p.models_dir / "c.safetensors"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    assert main(["models", str(p.root)]) == 0
    out = capsys.readouterr().out
    assert "unusable: the weights (.safetensors) are cut short" in out
    assert main(["models", str(p.root), "--slim", "c"]) == 2
    assert "nothing was slimmed" in capsys.readouterr().err
    q = Project.create(tmp_path / "q", ["background", "horse", "rider"])  # no model fits its classes
    q.models_dir.mkdir(exist_ok=True)
    _checkpoint(q.models_dir / "old", resumable=False)
    assert main(["models", str(q.root)]) == 0
    assert "* " not in capsys.readouterr().out
