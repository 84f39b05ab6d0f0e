"""Training and prediction from the app, as background :class:`~app.jobs.Job` s.

Thin adapters over :mod:`segmenter.train` (``Trainer`` with a callback and a cancel event),
:func:`segmenter.predict.predict_project` and :func:`segmenter.cam.tags_project` (masks from
tags). The validation mIoU is measured on images with a final mask that were held out of
training (a fifth of them, at least one, when there are three or more); with fewer, on the final
masks of the training images, and the page says so.
"""
from __future__ import annotations

import os
import time

import numpy as np

from annotations.importer import name_list
from annotations.store import Project

from . import jobs

#: Training sizes offered in the page (multiples of 32).
SIZES = (64, 128, 192, 256, 384, 512)


def split_validation(final_ids: list[int], fraction: float = 0.2, min_final: int = 3) -> list[int]:
    """Image ids held out for validation: every ``1/fraction``-th final-mask image (at least one)
    when there are ``min_final`` or more, else none."""
    if len(final_ids) < min_final:
        return []
    step = max(2, int(round(1.0 / fraction)))
    held = sorted(final_ids)[step - 1::step] or [sorted(final_ids)[-1]]
    return held


def validation_miou(project: Project, checkpoint: str, image_ids: list[int]) -> float | None:
    """Per-image mIoU (BENCHMARK.md) of the model at ``checkpoint`` against the final masks of ``image_ids``."""
    if not image_ids:
        return None
    from segmenter.metrics import MeanIoU
    from segmenter.predict import Predictor

    from annotations.errors import ImageError, NotFoundError

    pred = Predictor.from_checkpoint(checkpoint, expected_classes=project.class_names, device="auto")
    meter = MeanIoU(project.num_classes)
    for i in image_ids:
        try:  # an image removed (or its final mask taken back) meanwhile, elsewhere: not scored
            image, final = project.load_image(i), project.mask(i, "final")
        except (NotFoundError, ImageError):
            continue
        if final is None:
            continue
        meter.add(pred.predict([image])[0].mask, final)
    return float(meter.miou) if meter.scores else None


def train_target(project: Project, epochs: int, size: int, batch_size: int = 8):
    """The job body: train on everything the project carries, then validate."""

    def run(job: jobs.Job) -> str:
        from segmenter.data import ProjectSamples, TrainSet
        from segmenter.models import ModelConfig
        from segmenter.train import TrainCallback, TrainConfig, Trainer

        gone = project.missing_files(verify=True)  # deleted or damaged outside the tool: trained and validated without them
        ids = [i for i in project.image_ids() if i not in {im.id for im in gone}]
        left = "" if not gone else (
            f" Left out {len(gone)} image(s) whose file is missing or damaged ({name_list([im.name for im in gone], 5)}): "
            "put the files back, or remove those images.")
        final_ids = [i for i in ids if project.mask_info(i, "final") is not None]
        held = split_validation(final_ids)
        train_ids = [i for i in ids if i not in held]
        job.report(message=f"preparing {len(train_ids)} training image(s)…", epochs=epochs)
        samples = ProjectSamples(project, train_ids, layer=project.scribble_layer)
        data = TrainSet.build(samples, project.num_classes, size)
        name = f"app-unet-resnet18-{time.strftime('%Y%m%d-%H%M%S')}"
        mcfg = ModelConfig(classes=project.class_names, size=size)
        tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, checkpoint=str(project.models_dir / name),
                           background=project.background_index)

        class Report(TrainCallback):
            def on_step(self, p) -> None:
                job.report(fraction=min(0.99, p.global_step / max(p.total_steps, 1)), epoch=p.epoch + 1,
                           epochs=p.epochs, step=p.step, steps=p.steps_per_epoch, loss=float(p.loss),
                           eta_s=float(p.eta_s), loss_point=(p.global_step, float(p.loss)),
                           message=f"training ({p.phase}) on {len(data)} image(s) at {size} px")

            def on_epoch_end(self, p, metrics) -> None:
                job.report(message=f"epoch {p.epoch + 1}/{p.epochs} done")

        res = Trainer(data, mcfg, tcfg, callbacks=[Report()], cancel=job.cancel, where="the app").fit()
        if res.stopped:
            return res.message or f"training stopped ({res.stopped})"
        val_ids, where = (held, "held-out final mask") if held else (final_ids, "final mask")
        where = where + ("" if len(val_ids) == 1 else "s") + ("" if held else " of training images")
        if val_ids and res.checkpoint:
            job.report(message=f"validating on {len(val_ids)} {where}…")
            miou = validation_miou(project, res.checkpoint, val_ids)
            if miou is None:  # removed meanwhile (here or on the command line)
                return (f"model {name}: {res.epochs_done} epoch(s) in {res.train_seconds:.0f} s, saved; no validation "
                        f"mIoU: the images held out for it were removed (or their final masks) meanwhile.{left}")
            job.report(val_miou=miou)
            return (f"model {name}: {res.epochs_done} epoch(s) in {res.train_seconds:.0f} s; validation mIoU "
                    f"{miou:.3f} on {len(val_ids)} {where}.{left}")
        return (f"model {name}: {res.epochs_done} epoch(s) in {res.train_seconds:.0f} s. Mark some masks final "
                f"to see a validation mIoU.{left}")

    return run


def predict_target(project: Project):
    """The job body: predict every image that has no final or imported mask."""

    def run(job: jobs.Job) -> str:
        from segmenter.predict import predict_project

        ids = [i for i in project.image_ids()
               if project.mask_info(i, "final") is None and project.mask_info(i, "imported") is None]
        if not ids:
            return "Every image already has a final mask; nothing to predict."
        job.report(message=f"predicting {len(ids)} image(s)…", steps=len(ids))

        def cb(done: int, total: int) -> None:
            job.report(fraction=done / max(total, 1), step=done, steps=total,
                       message=f"predicted {done}/{total} image(s)")

        summary = predict_project(project, image_ids=ids, callback=cb, cancel=job.cancel)
        unc = [u for _, _, u in summary.predicted]
        tail = f"; mean uncertainty {float(np.mean(unc)):.3f}" if unc else ""
        msg = f"{len(summary.predicted)} mask(s) predicted with model {summary.model_version}{tail}."
        if summary.from_strokes:  # an early model: where it fails the strokes it trained on, they lead
            n = len(summary.from_strokes)
            msg += (f" On {n} image(s) you drew on, the model contradicts more than 5 % of your strokes, so their "
                    "mask comes from your strokes alone; train longer or on more images.")
        if summary.from_tags:  # a model trained on tag masks drops small classes: the tags' mask stays
            n = len(summary.from_tags)
            msg += (f" On {n} image(s) the model misses a class you tagged present that the tags' mask shows, "
                    "so their mask stays the tags' mask.")
        if summary.unreadable:  # files deleted or damaged outside the tool: the others were predicted
            msg += (f" Skipped {len(summary.unreadable)} image(s) whose file is missing or unreadable "
                    f"({name_list(summary.unreadable, 5)}): "
                    "put the files back, or remove those images.")
        if summary.removed:
            msg += f" {len(summary.removed)} image(s) were removed from the project meanwhile: skipped."
        return msg

    return run


def tags_target(project: Project, size: int = 128):
    """The job body: train the tag classifier on the tagged images and save their pseudo-masks."""

    def run(job: jobs.Job) -> str:
        from segmenter.cam import TagConfig, tags_project

        def on_epoch(epoch: int, epochs: int, loss: float) -> None:
            # the classifier is most of the time; the masks take the last tenth
            job.report(fraction=0.9 * epoch / max(epochs, 1), epoch=epoch, epochs=epochs, loss=float(loss),
                       loss_point=(epoch, float(loss)),
                       message="making the masks…" if epoch == epochs else "training the tag classifier…")

        summary = tags_project(project, TagConfig(size=size, device="auto"), layer=project.scribble_layer,
                               progress=on_epoch, cancel=job.cancel, on_stage=lambda m: job.report(message=m))
        warn = "".join(f" Note: {w}" for w in summary.warnings)
        return f"Masks from tags: {summary.message()}.{warn}"

    return run


def epochs_from_page(value) -> int:
    """The page's Epochs box as a whole number of epochs; anything else is an :class:`AnnotationError`
    saying what to enter (Gradio's own check showed a bare "Error" badge, an empty box trained 1 epoch
    and 2.5 trained 2)."""
    from annotations.errors import AnnotationError

    if value is None or value == "":
        raise AnnotationError("enter a number of epochs (1–1000).")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"epochs must be a whole number from 1 to 1000, not {value!r}.") from None
    if not v.is_integer() or not 1 <= v <= 1000:
        raise AnnotationError(f"epochs must be a whole number from 1 to 1000, not {_as_typed(value, v)}.")
    return int(v)


def _as_typed(value, v: float) -> str:
    """``value`` as a person typed it: a whole number in digits (``1000000``, not ``1e+06``), a
    fraction without an exponent (``0.0001``)."""
    if isinstance(value, str):
        return value.strip()
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    if np.isfinite(v) and 1e-8 <= abs(v) < 1e16:
        return np.format_float_positional(v, trim="-")
    return repr(v)


def project_state(project: Project) -> tuple:
    """What a failed job's cause usually is about: the classes and the images. A failure recorded
    with another state is out of date (e.g. "the model has other classes" after a rename back)."""
    return tuple(project.class_names), tuple(project.image_ids())


def _noting_state(project: Project, target):
    """``target`` that records :func:`project_state` on the job when it ends (before it is marked
    failed or done), so the page can tell a failure whose cause may be gone."""

    def run(job: jobs.Job) -> str:
        try:
            return target(job)
        finally:
            try:
                job.end_state = project_state(project)
            except Exception:  # noqa: BLE001 - the job's own outcome matters, not this note
                job.end_state = None

    return run


def model_line(project: Project) -> str:
    """What the Train panel says when no job of this session is shown: the model Predict will use
    (its name and when it was trained), or that there is none yet."""
    from segmenter.errors import SegmenterError
    from segmenter.models import latest_checkpoint, read_config

    path = latest_checkpoint(project.models_dir)
    if path is None:
        return "No trained model yet: press Train, then Predict."
    try:
        doc = read_config(path)
    except SegmenterError:
        return f"Predict will use model {path.stem}, whose settings file cannot be read: train again."
    when = str(doc.get("saved") or "").replace("T", " ")[:16]
    line = f"Predict will use model {path.stem}" + (f", trained {when}" if when else "") + "."
    classes = doc.get("config", {}).get("classes")
    if isinstance(classes, list) and classes != project.class_names:
        line += (f" It was trained for the classes {', '.join(map(str, classes))}, not the project's "
                 f"{', '.join(project.class_names)}: train again before predicting.")
    return line


def shown_job(project: Project) -> dict | None:
    """The snapshot of the job the Train panel shows: the project's latest job, unless it failed
    and the classes or images changed since (its message would describe a cause that is gone)."""
    job = jobs.current_job(str(project.root))
    if job is None:
        return None
    snap = job.snapshot()
    if snap["status"] == "failed":
        end = getattr(job, "end_state", None)
        if end is not None and end != project_state(project):
            return None
    return snap


def watch_key(project: Project) -> tuple[str, bool]:
    """``(key, running)``: what the Train panel shows changes when the key does (a job started,
    changed status, or a model was saved, in any tab or on the command line), and the image shown
    when its last part does (a mask stored by the command line); cheap enough for every tab to ask
    every few seconds (a dict lookup, a stat and one query that reads the newest mask rows)."""
    job = jobs.current_job(str(project.root))
    snap = job.snapshot() if job is not None else {}
    status = snap.get("status", "")
    try:
        models = os.stat(project.models_dir).st_mtime_ns
    except OSError:
        models = 0
    stamp = project.masks_stamp(not_from="app:")  # masks not of the app's own pages (they know theirs)
    return f"{snap.get('kind', '')}:{snap.get('started', '')}:{status}:{models}:{stamp}", status == "running"


def masks_changed(seen: str, key: str) -> bool:
    """Whether masks were stored between two :func:`watch_key` keys by other than the app's pages
    (a ``predict``, ``accept`` or ``pseudo`` on the command line)."""
    a, b = seen.split(":"), key.split(":")
    return len(a) == len(b) == 5 and a[4] != b[4]


def panel_html(project: Project) -> str:
    """The Train panel's progress block: the job shown (:func:`shown_job`), else :func:`model_line`."""
    snap = shown_job(project)
    return jobs.progress_html(snap) if snap is not None else jobs.progress_html(None, idle=model_line(project))


def start_training(project: Project, epochs: int = 5, size: int = 128) -> jobs.Job:
    from annotations.errors import AnnotationError

    if epochs < 1 or epochs > 1000:
        raise AnnotationError(f"epochs must be between 1 and 1000, not {epochs}.")
    if size not in SIZES:
        raise AnnotationError(f"training size must be one of {', '.join(map(str, SIZES))}, not {size}.")
    target = _noting_state(project, train_target(project, epochs, size))
    return jobs.start_job(str(project.root), "training", target)


def start_tags(project: Project, size: int = 128) -> jobs.Job:
    """Masks from tags in the background; refuses at once, with the reason, when no image has a tag."""
    from annotations.errors import AnnotationError

    if size not in SIZES:
        raise AnnotationError(f"classifier size must be one of {', '.join(map(str, SIZES))}, not {size}.")
    if not any(project.all_tags().values()):
        raise AnnotationError("No image has a tag yet: mark classes present or absent on some images first "
                              "(the tag buttons under the canvas).")
    target = _noting_state(project, tags_target(project, size))
    return jobs.start_job(str(project.root), "masks from tags", target)


def start_predict(project: Project) -> jobs.Job:
    """Prediction in the background; refuses at once when the project has no trained model."""
    from annotations.errors import AnnotationError
    from segmenter.models import latest_checkpoint

    if latest_checkpoint(project.models_dir) is None:
        raise AnnotationError("No trained model yet: press Train first, then predict.")
    return jobs.start_job(str(project.root), "prediction", _noting_state(project, predict_target(project)))
