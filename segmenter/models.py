"""Model factory and checkpoint I/O (safetensors weights + a JSON config; never pickle).

A checkpoint is two files side by side::

    <stem>.safetensors   tensors: "model.*" (weights), optionally "optim.*" (optimizer state),
                         "teacher.*" (EMA teacher weights)
    <stem>.json          {"format": "weakseg-checkpoint", "config": ModelConfig, "state": {...}}

``state`` holds JSON-able training state (epoch, step, optimizer scalars) for resuming.
Both files are written atomically; the JSON is written last, so a checkpoint whose JSON exists
is complete. Loading never uses ``torch.load``: a corrupt or foreign file gives a
:class:`CheckpointError`, and a checkpoint made for other classes is refused with one.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from annotations.imageio import atomic_write_bytes

from .errors import CheckpointError, SegmenterError

FORMAT = "weakseg-checkpoint"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def list_architectures() -> list[str]:
    """Names smp offers for ``ModelConfig.arch`` (e.g. ``unet``, ``unetplusplus``, ``fpn``, ``deeplabv3plus``)."""
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def list_encoders() -> list[str]:
    """Names smp offers for ``ModelConfig.encoder`` (e.g. ``resnet18``, ``mobilenet_v2``, ``efficientnet-b0``)."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it images.

    ``classes``: class names, index = label value. ``size``: the square input side the images are
    resized to (pixels). ``in_channels``: images are converted to this many channels (1 or 3)
    before normalisation with ``mean``/``std`` (per channel, on values scaled to [0, 1]).
    ``aux_head``: an image-level multi-label classification head (smp ``aux_params``) for tags.
    """

    classes: list[str]
    arch: str = "unet"
    encoder: str = "resnet18"
    size: int = 128
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    aux_head: bool = True
    version: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) < 1:
            raise SegmenterError("a model needs at least one class.")
        if len(self.classes) > 254:
            raise SegmenterError(f"at most 254 classes are supported, got {len(self.classes)}.")
        self.arch = str(self.arch).lower()
        if self.in_channels not in (1, 3):
            raise SegmenterError(f"in_channels must be 1 or 3, got {self.in_channels}.")
        if int(self.size) < 32 or int(self.size) % 32:
            raise SegmenterError(f"size must be a multiple of 32 and at least 32, got {self.size}.")
        self.size = int(self.size)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) == 3 and self.in_channels == 1:
            self.mean, self.std = (sum(self.mean) / 3,), (sum(self.std) / 3,)
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise SegmenterError("mean and std need one value per input channel.")
        if any(s <= 0 for s in self.std):
            raise SegmenterError("std values must be positive.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def create_model(cfg: ModelConfig, encoder_weights: str | Path | None = None):
    """Build the smp model of ``cfg``: forward gives ``(B, C, H, W)`` logits, or
    ``(logits, (B, C) tag logits)`` when ``cfg.aux_head``.

    ``encoder_weights``: ``None`` (random init, no download) or a local ``.safetensors`` file of
    encoder weights (keys as in ``model.encoder``, optionally prefixed ``encoder.``).
    """
    import segmentation_models_pytorch as smp

    if cfg.arch not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise SegmenterError(
            f"unknown architecture '{cfg.arch}'; choose one of: {', '.join(list_architectures())}."
        )
    if cfg.encoder not in smp.encoders.get_encoder_names():
        raise SegmenterError(
            f"unknown encoder '{cfg.encoder}'; choose one of: {', '.join(list_encoders())}."
        )
    kwargs = {}
    if cfg.aux_head:
        kwargs["aux_params"] = {"classes": cfg.num_classes, "dropout": 0.0}
    try:
        model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights=None,
                                 in_channels=cfg.in_channels, classes=cfg.num_classes, **kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise SegmenterError(f"cannot build {cfg.arch} with encoder {cfg.encoder}: {e}") from None
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def check_encoder_weights_path(path: str | Path) -> Path:
    """``path`` as a :class:`Path` if it names an existing ``.safetensors`` file, else a
    :class:`CheckpointError` that says what is wrong (checked before any long work starts)."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError(
            f"{p.name}: encoder weights must be a .safetensors file (pickle files are never loaded); "
            "convert it once with safetensors.torch.save_file."
        )
    if not p.is_file():
        raise CheckpointError(f"{p}: encoder weights file not found.")
    return p


def load_encoder_weights(model, path: str | Path) -> int:
    """Load pretrained encoder weights from a local safetensors file; returns the tensors loaded.

    Keys may be those of ``model.encoder.state_dict()`` or carry an ``encoder.`` prefix (a whole
    smp model's weights). Tensors whose shape differs (e.g. the first conv for other channels) are
    skipped. Raises :class:`CheckpointError` when the file is unreadable or nothing matches.
    """
    p = check_encoder_weights_path(path)
    tensors = _read_safetensors(p)
    target = model.encoder.state_dict()
    picked = {}
    for k, v in tensors.items():
        for cand in (k, k.removeprefix("encoder."), k.removeprefix("model.encoder.")):
            if cand in target and tuple(target[cand].shape) == tuple(v.shape):
                picked[cand] = v
                break
    if not picked:
        raise CheckpointError(f"{p.name}: no tensor matches the {type(model.encoder).__name__} encoder.")
    model.encoder.load_state_dict(picked, strict=False)
    return len(picked)


def _read_safetensors(p: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found.")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p.name}: the weights file is corrupt or not safetensors ({e}).") from None


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, config)`` paths of a checkpoint given its stem or either file."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _flatten_optimizer(opt_state: dict) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and JSON-able scalars."""
    import torch

    tensors, scalars = {}, {}
    for pid, st in opt_state["state"].items():
        sc = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                sc[k] = v
        scalars[str(pid)] = sc
    return tensors, {"state": scalars, "param_groups": opt_state["param_groups"]}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {int(k): dict(v) for k, v in meta["state"].items()}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model, cfg: ModelConfig, *, optimizer=None, teacher=None,
                    state: dict | None = None) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; returns the weights path.

    ``cfg.version`` is set to ``<stem>-<first 8 hex of the weights' sha256>``.
    """
    from safetensors.torch import save as st_save

    wpath, jpath = checkpoint_paths(path)
    model = getattr(model, "module", model)  # unwrap DDP
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict = {"state": dict(state or {})}
    if optimizer is not None:
        t, m = _flatten_optimizer(optimizer.state_dict())
        tensors.update(t)
        meta["optimizer"] = m
    if teacher is not None:
        tensors.update({f"teacher.{k}": v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()})
    data = st_save(tensors)
    cfg.version = f"{wpath.stem}-{hashlib.sha256(data).hexdigest()[:8]}"
    atomic_write_bytes(wpath, data)
    # "saved_utc": as the project store writes times, to tell strokes the model saw from later ones
    doc = {"format": FORMAT, "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "saved_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "config": cfg.to_json(), **meta}
    atomic_write_bytes(jpath, (json.dumps(doc, indent=1) + "\n").encode())
    return wpath


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``model`` (eval mode, on CPU), its config, JSON state and raw tensors."""

    model: object
    config: ModelConfig
    state: dict
    tensors: dict
    optimizer_meta: dict | None
    path: Path

    def optimizer_state(self) -> dict | None:
        if self.optimizer_meta is None:
            return None
        return _unflatten_optimizer(self.tensors, self.optimizer_meta)

    def teacher_state(self) -> dict | None:
        t = {k[len("teacher."):]: v for k, v in self.tensors.items() if k.startswith("teacher.")}
        return t or None


def read_config(path: str | Path) -> dict:
    """The JSON document of a checkpoint (``config``, ``state``...). Raises :class:`CheckpointError`."""
    _, jpath = checkpoint_paths(path)
    if not jpath.is_file():
        raise CheckpointError(f"{jpath}: checkpoint config not found.")
    try:
        doc = json.loads(jpath.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{jpath.name}: the checkpoint config is corrupt ({e}).") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "config" not in doc:
        raise CheckpointError(f"{jpath.name}: not a checkpoint of this tool.")
    return doc


def rename_project_class(project, key: int | str, new_name: str):
    """Rename class ``key`` (index or name) of ``project`` and, in the JSON config of every checkpoint
    in its ``models/`` whose class at that index has the old name, that class too: the class is the
    same, so its models stay usable (predict refuses a checkpoint whose class names differ).
    Configs are rewritten atomically; unreadable ones are left alone. Returns the class's new
    :class:`~annotations.store.ClassInfo` (the page and ``classes rename`` both call this)."""
    old = project.class_info(key).name
    c = project.rename_class(key, new_name)
    folder = Path(project.models_dir)
    for jpath in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = read_config(jpath)
        except CheckpointError:
            continue
        classes = doc["config"].get("classes")
        if isinstance(classes, list) and 0 <= c.idx < len(classes) and classes[c.idx] == old:
            classes[c.idx] = c.name
            atomic_write_bytes(jpath, (json.dumps(doc, indent=1) + "\n").encode())
    return c


def load_checkpoint(path: str | Path, expected_classes: list[str] | None = None) -> Checkpoint:
    """Load a checkpoint. ``expected_classes``: the project's class names; a checkpoint trained for
    other classes is refused with a :class:`CheckpointError` naming both lists."""
    wpath, _ = checkpoint_paths(path)
    doc = read_config(path)
    try:
        cfg = ModelConfig.from_json(doc["config"])
    except (SegmenterError, TypeError, ValueError) as e:
        raise CheckpointError(f"{wpath.stem}: the checkpoint config is invalid ({e}).") from None
    if expected_classes is not None and list(expected_classes) != cfg.classes:
        raise CheckpointError(
            f"{wpath.stem} was trained for classes {cfg.classes}, but the project has "
            f"{list(expected_classes)}; train a new model for these classes."
        )
    tensors = _read_safetensors(wpath)
    model = create_model(cfg)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{wpath.name}: the weights do not fit {cfg.arch}/{cfg.encoder} ({first}).") from None
    model.eval()
    return Checkpoint(model=model, config=cfg, state=doc.get("state", {}), tensors=tensors,
                      optimizer_meta=doc.get("optimizer"), path=wpath)


def saved_at(jpath: Path, doc: dict | None = None) -> str:
    """When a checkpoint was saved, as an ISO time in UTC: its JSON's ``saved_utc`` (a copied
    project folder, a class renamed or a model slimmed since keep it), else the JSON's mtime.
    ``doc``: the JSON already read."""
    try:
        doc = json.loads(Path(jpath).read_text(encoding="utf-8")) if doc is None else doc
        got = doc.get("saved_utc")
        if isinstance(got, str) and got:
            return datetime.fromisoformat(got).astimezone(timezone.utc).isoformat(timespec="milliseconds")
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    try:
        t = Path(jpath).stat().st_mtime
    except OSError:
        t = 0.0
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def latest_checkpoint(folder: str | Path, names=None) -> Path | None:
    """The newest complete checkpoint (:func:`saved_at`) in ``folder`` (of those named ``names``,
    when given), or ``None``."""
    d = Path(folder)
    if not d.is_dir():
        return None
    cands = [j for j in d.glob("*.json") if j.with_suffix(".safetensors").is_file()
             and (names is None or j.stem in names)]
    if not cands:
        return None
    return max(cands, key=lambda j: (saved_at(j), j.name)).with_suffix(".safetensors")


# ----------------------------------------------------------------------------- a project's saved models
@dataclass
class ModelEntry:
    """One saved model of a folder, read from its JSON (the weights are not loaded): ``name`` (the
    stem), its ``classes``, ``arch``/``encoder``/``size``, ``epochs`` trained, ``saved`` (local
    time), ``bytes`` (both files), ``resumable`` (optimiser state kept: ``train --resume`` goes on
    exactly), ``error`` (why it cannot be used; the other fields may then be empty)."""

    name: str
    weights: Path
    saved_utc: str = ""  # :func:`saved_at`: the order of the models
    classes: list = field(default_factory=list)
    arch: str = ""
    encoder: str = ""
    size: int = 0
    epochs: int = 0
    saved: str = ""
    bytes: int = 0
    resumable: bool = False
    error: str = ""


def list_models(folder: str | Path) -> list[ModelEntry]:
    """The models in ``folder`` (each ``<name>.json`` with or without its weights, and weights
    without a JSON), oldest first."""
    d = Path(folder)
    if not d.is_dir():
        return []
    stems = {p.stem for p in d.glob("*.json")} | {p.stem for p in d.glob("*.safetensors")}
    out = []
    for stem in stems:
        wpath, jpath = checkpoint_paths(d / stem)
        size = sum(p.stat().st_size for p in (wpath, jpath) if p.is_file())
        e = ModelEntry(name=stem, weights=wpath, bytes=size)
        doc = None
        if not jpath.is_file():
            e.error = "no config (.json): an interrupted save, or not this tool's"
        else:
            try:
                doc = read_config(jpath)
                cfg = doc["config"]
                e.classes = list(cfg.get("classes") or [])
                e.arch, e.encoder, e.size = str(cfg.get("arch", "")), str(cfg.get("encoder", "")), int(cfg.get("size") or 0)
                e.epochs = int((doc.get("state") or {}).get("epoch") or 0)
                e.saved = str(doc.get("saved", ""))
                e.resumable = "optimizer" in doc
            except (CheckpointError, AttributeError, TypeError, ValueError) as err:
                e.error = str(err).split(": ", 1)[-1] if isinstance(err, CheckpointError) else "the config is invalid"
            if not e.error and not wpath.is_file():
                e.error = "the weights (.safetensors) are missing"
            elif not e.error and not _weights_complete(wpath):
                e.error = "the weights (.safetensors) are cut short or not safetensors"
        e.saved_utc = saved_at(jpath, doc if isinstance(doc, dict) else None)
        out.append(e)
    return sorted(out, key=lambda m: (m.saved_utc, m.name))


def _weights_complete(path: Path) -> bool:
    """Whether a safetensors file holds every byte its header names (read from the header alone)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                return False
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return 8 + n + max(ends, default=0) <= size
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def slim_checkpoint(path: str | Path) -> int:
    """Drop a checkpoint's optimiser state and EMA teacher (three quarters of a ResNet-18 U-Net's
    file): it predicts as before and keeps its version (the weights are the same); ``train
    --resume`` from it starts the optimiser afresh. Returns the bytes saved (0: nothing to drop)."""
    from safetensors.torch import save as st_save

    wpath, jpath = checkpoint_paths(path)
    doc = read_config(jpath)
    before = wpath.stat().st_size
    tensors = _read_safetensors(wpath)
    kept = {k: v for k, v in tensors.items() if k.startswith("model.")}
    if len(kept) == len(tensors) and "optimizer" not in doc:
        return 0
    atomic_write_bytes(wpath, st_save(kept))
    doc.pop("optimizer", None)
    atomic_write_bytes(jpath, (json.dumps(doc, indent=1) + "\n").encode())
    return before - wpath.stat().st_size


def delete_model(path: str | Path) -> int:
    """Remove a model's two files (what exists of them); returns the bytes freed."""
    freed = 0
    for p in checkpoint_paths(path):
        if p.is_file():
            freed += p.stat().st_size
            p.unlink()
    return freed


# ----------------------------------------------------------------------------- trainings under way
#: ``models/.training-<name>.lock``: a training of this project is under way (the command line's
#: or the app's), so another one started meanwhile is told (both share the machine).
TRAINING_MARK = ".training-{}.lock"


def mark_training(checkpoint: str | Path, where: str) -> Path | None:
    """Record that a training writing ``checkpoint`` runs in this process (``where``: "the command
    line", "the app"); the path to hand to :func:`unmark_training`, ``None`` when it cannot be written."""
    import os
    import socket

    wpath, _ = checkpoint_paths(checkpoint)
    mark = wpath.parent / TRAINING_MARK.format(wpath.stem)
    try:
        wpath.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "model": wpath.stem,
                                    "where": where, "started": time.strftime("%H:%M")}))
    except OSError:
        return None
    return mark


def unmark_training(mark: Path | None) -> None:
    if mark is not None:
        try:
            mark.unlink()
        except OSError:
            pass


def trainings_running(folder: str | Path) -> list[dict]:
    """The trainings of other processes under way in ``folder`` (:func:`mark_training`), each
    ``{"model", "where", "started"}``; the marks of processes that ended without removing theirs
    (killed) are removed."""
    import os
    import socket

    out = []
    d = Path(folder)
    for mark in sorted(d.glob(TRAINING_MARK.format("*"))) if d.is_dir() else []:
        try:
            doc = json.loads(mark.read_text())
            pid = int(doc["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == os.getpid():
            continue
        if doc.get("host") == socket.gethostname():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:  # ended without removing its mark
                unmark_training(mark)
                continue
            except OSError:  # alive, another user's
                pass
        out.append({"model": str(doc.get("model", "")), "where": str(doc.get("where", "")),
                    "started": str(doc.get("started", ""))})
    return out


def training_text(run: dict) -> str:
    """Where and since when a training of :func:`trainings_running` runs: ``from the app, since 14:02``."""
    return f"from {run['where'] or 'another process'}" + (f", since {run['started']}" if run["started"] else "")


def trainings_note(folder: str | Path) -> str:
    """A sentence naming the other trainings under way in ``folder`` (``""``: none)."""
    runs = trainings_running(folder)
    if not runs:
        return ""
    what = "; ".join(f"model {r['model']} {training_text(r)}" for r in runs)
    return (f"another training of this project is under way ({what}): both share the machine, so each "
            "takes longer.")
