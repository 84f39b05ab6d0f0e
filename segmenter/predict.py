"""Prediction: masks at full resolution, confidence, per-image uncertainty; into the store.

Two ways to handle image size (``mode``):

* ``resize`` (default; what the trainer trains on): the image is resized to the model's square
  input, and the class scores are resized back to the image's full resolution channel by channel,
  so memory stays ``O(H x W)`` for any image size.
* ``tile``: the image is cut at native resolution into overlapping ``size x size`` tiles whose
  scores are blended; for models trained on crops at native scale (e.g. very large images).

Per image the uncertainty is the mean normalised entropy of the class probabilities (0 = sure,
1 = uniform), so sorting images by it answers "what to annotate next".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .data import images_to_tensor, normalize, resize_image, to_channels
from .errors import NoLabelsError, SegmenterError
from .models import ModelConfig, latest_checkpoint, load_checkpoint


@dataclass
class Prediction:
    """``mask`` ``(H, W)`` uint8 class index; ``confidence`` ``(H, W)`` float32 (max probability);
    ``uncertainty``: mean normalised entropy in [0, 1]; ``margin``: mean (top-1 - top-2) probability."""

    mask: np.ndarray
    confidence: np.ndarray
    uncertainty: float
    margin: float


def full_resolution(logits: np.ndarray, height: int, width: int):
    """``(C, h, w)`` float logits -> ``(mask (H, W) uint8, confidence (H, W) float32)`` at full
    size, upsampling one channel at a time with a running log-sum-exp (memory ``O(H x W)``)."""
    C = logits.shape[0]
    best = second = lse_max = None
    mask = np.zeros((height, width), np.uint8)
    sum_exp = None
    for c in range(C):
        ch = logits[c].astype(np.float32)
        up = ch if ch.shape == (height, width) else cv2.resize(ch, (width, height), interpolation=cv2.INTER_LINEAR)
        if best is None:
            best, lse_max, sum_exp = up.copy(), up.copy(), np.ones_like(up)
            continue
        better = up > best
        mask[better] = c
        np.maximum(best, up, out=best)
        # running log-sum-exp
        new_max = np.maximum(lse_max, up)
        sum_exp = sum_exp * np.exp(lse_max - new_max) + np.exp(up - new_max)
        lse_max = new_max
    conf = np.exp(best - lse_max) / sum_exp
    return mask, conf.astype(np.float32)


def image_uncertainty(probs: np.ndarray) -> tuple[float, float]:
    """``(C, h, w)`` probabilities -> (mean normalised entropy, mean top-1 minus top-2 margin)."""
    C = probs.shape[0]
    if C < 2:
        return 0.0, 1.0
    p = np.clip(probs, 1e-8, 1.0)
    ent = float(-(p * np.log(p)).sum(0).mean() / math.log(C))
    top = np.sort(probs, axis=0)
    return ent, float((top[-1] - top[-2]).mean())


class Predictor:
    """Runs a trained model on images of any size and channel count.

    ``tta``: also predict the horizontally flipped image and average the logits.
    ``mode``: ``resize`` or ``tile`` (see the module docstring).
    """

    def __init__(self, model, config: ModelConfig, device: str = "cpu", tta: bool = False, mode: str = "resize",
                 batch_size: int = 16, amp: bool = True):
        import torch

        if mode not in ("resize", "tile"):
            raise SegmenterError(f"unknown prediction mode '{mode}'; use resize or tile.")
        from .train import resolve_device_name

        self.device = resolve_device_name(device)
        self.model = model.to(self.device).eval()
        self.cfg = config
        self.tta = tta
        self.mode = mode
        self.batch_size = batch_size
        self.amp = amp and self.device.startswith("cuda")
        self._torch = torch

    @classmethod
    def from_checkpoint(cls, path, expected_classes=None, **kw) -> "Predictor":
        ck = load_checkpoint(path, expected_classes=expected_classes)
        return cls(ck.model, ck.config, **kw)

    def _forward(self, x01):
        """``(B, ch, S, S)`` [0, 1] -> ``(B, C, S, S)`` float32 logits (hflip TTA averaged)."""
        torch = self._torch
        x = normalize(x01, self.cfg.mean, self.cfg.std)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            out = self.model(x)
            lo = (out[0] if isinstance(out, tuple) else out).float()
            if self.tta:
                out = self.model(torch.flip(x, dims=[3]))
                lo = (lo + torch.flip((out[0] if isinstance(out, tuple) else out).float(), dims=[3])) / 2
        return lo

    def logits_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Logits ``(C, S, S)`` float32 at the model's input size (``resize`` mode), one per image."""
        S, ch = self.cfg.size, self.cfg.in_channels
        out = []
        for s in range(0, len(images), self.batch_size):
            arr = np.stack([resize_image(im, S, ch) for im in images[s:s + self.batch_size]])
            out.extend(self._forward(images_to_tensor(arr, self.device)).cpu().numpy())
        return out

    def _tile_logits(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` logits blended from overlapping native-resolution tiles."""
        S = self.cfg.size
        img = to_channels(image, self.cfg.in_channels)
        H, W = img.shape[:2]
        ph, pw = max(0, S - H), max(0, S - W)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        Hp, Wp = img.shape[:2]
        stride = max(1, (S * 3) // 4)
        ys = list(range(0, Hp - S, stride)) + [Hp - S]
        xs = list(range(0, Wp - S, stride)) + [Wp - S]
        acc = np.zeros((self.cfg.num_classes, Hp, Wp), np.float32)
        cnt = np.zeros((Hp, Wp), np.float32)
        w1 = np.hanning(S + 2)[1:-1].astype(np.float32)
        win = np.outer(w1, w1) + 1e-3
        boxes = [(y, x) for y in sorted(set(ys)) for x in sorted(set(xs))]
        for s in range(0, len(boxes), self.batch_size):
            chunk = boxes[s:s + self.batch_size]
            arr = np.stack([img[y:y + S, x:x + S] for y, x in chunk])
            lo = self._forward(images_to_tensor(arr, self.device)).cpu().numpy()
            for (y, x), l in zip(chunk, lo):
                acc[:, y:y + S, x:x + S] += l * win
                cnt[y:y + S, x:x + S] += win
        return (acc / cnt)[:, :H, :W]

    def predict(self, images: list[np.ndarray], absent: list | None = None) -> list[Prediction]:
        """Masks for ``images`` (each ``(H, W)`` or ``(H, W, 3)`` uint8) at their full resolution.

        ``absent``: per image, class indices tagged absent; they are never predicted.
        """
        if self.mode == "tile":
            logits = [self._tile_logits(im) for im in images]
        else:
            logits = self.logits_batch(images)
        preds = []
        for i, (im, lo) in enumerate(zip(images, logits)):
            if absent is not None and absent[i]:
                ab = [c for c in absent[i] if 0 <= c < lo.shape[0]]
                if len(ab) < lo.shape[0]:
                    lo = lo.copy()
                    lo[ab] = -1e4
            z = lo - lo.max(0, keepdims=True)
            probs = np.exp(z)
            probs /= probs.sum(0, keepdims=True)
            unc, margin = image_uncertainty(probs)
            mask, conf = full_resolution(lo, im.shape[0], im.shape[1])
            preds.append(Prediction(mask, conf, unc, margin))
        return preds


def resolve_model(project, model: str | None) -> Path:
    """A checkpoint path from ``model`` (a path, or a name in the project's models folder;
    ``None`` = the newest one there made for the project's classes as they are, else the newest).
    Raises :class:`SegmenterError` naming what exists."""
    models_dir = Path(project.models_dir)
    if model is None:
        p = latest_checkpoint(models_dir)
        if p is None:
            raise SegmenterError(f"the project has no trained model in {models_dir}; run 'train' first.")
        # the newest may be made for other classes (one added or deleted since): the newest that fits
        return latest_checkpoint(models_dir, set(project.models_for_classes())) or p
    cand = Path(model)
    if cand.suffix not in (".safetensors", ".json"):
        cand = cand.with_name(cand.name + ".safetensors")
    if not cand.is_file():
        cand2 = models_dir / cand.name
        if cand2.is_file():
            return cand2
        names = sorted(p.stem for p in models_dir.glob("*.safetensors")) if models_dir.is_dir() else []
        raise SegmenterError(f"no model '{model}'; the project has: {', '.join(names) or 'none'}.")
    return cand


@dataclass
class PredictSummary:
    model_version: str
    predicted: list  # [(image_id, name, uncertainty)] sorted most uncertain first
    #: names of the images whose stored mask comes from their strokes alone (:func:`distrusted_on`)
    from_strokes: list = field(default_factory=list)
    #: names of the images whose stored mask is their tags' pseudo-mask (:func:`missed_tagged`)
    from_tags: list = field(default_factory=list)
    #: the images skipped because their file is missing or unreadable, and the line that names them
    #: with the remedy (:meth:`annotations.store.Project.files_note`)
    unreadable: list = field(default_factory=list)
    unreadable_note: str = ""
    #: ids of the images removed from the project while the run went on (skipped)
    removed: list = field(default_factory=list)

    def lines(self, limit: int = 10) -> list[str]:
        """The summary: ``limit`` (``--top``) most uncertain images (0: none listed); the images
        named in the notes, ten at most."""
        out = [f"{len(self.predicted)} masks predicted with model {self.model_version}"]
        names = 10
        if self.from_strokes:
            n = len(self.from_strokes)
            out.append(f"{n} image(s) where the model contradicts more than {DISTRUST_ERROR:.0%} of the strokes it was "
                       f"trained on: their mask comes from the strokes alone (train longer or on more images): "
                       + ", ".join(self.from_strokes[:names]) + (" …" if n > names else ""))
        if self.from_tags:
            n = len(self.from_tags)
            out.append(f"{n} image(s) where the model misses a class tagged present that the tags' pseudo-mask shows: "
                       "their mask stays the tags' pseudo-mask: " + ", ".join(self.from_tags[:names])
                       + (" …" if n > names else ""))
        if self.predicted and limit > 0:
            out.append("most uncertain (annotate these next):")
            out += [f"  {name}  uncertainty {u:.3f}" for _, name, u in self.predicted[:limit]]
        if self.unreadable_note:
            out.append(self.unreadable_note)
        if self.removed:
            out.append(f"{len(self.removed)} image(s) were removed from the project while this ran (ids "
                       f"{', '.join(map(str, self.removed[:names]))}{' …' if len(self.removed) > names else ''}): "
                       "skipped")
        return out


#: The share of an image's strokes (those drawn before the model was saved, so it trained on
#: them) that the model's own mask may contradict before the model is not trusted on that image.
DISTRUST_ERROR = 0.05


def model_saved_utc(path) -> str | None:
    """When the checkpoint at ``path`` was saved, as the store writes times (ISO, UTC, to the
    millisecond); from its local time to the second for older checkpoints; ``None`` when its
    sidecar does not say."""
    from datetime import datetime, timezone

    from .models import read_config

    try:
        doc = read_config(path)
        if isinstance(doc.get("saved_utc"), str):
            return doc["saved_utc"]
        return datetime.strptime(doc.get("saved"), "%Y-%m-%dT%H:%M:%S").astimezone(timezone.utc).isoformat(
            timespec="milliseconds")
    except (SegmenterError, OSError, TypeError, ValueError):
        return None


def distrusted_on(mask: np.ndarray, trained: np.ndarray | None, current: np.ndarray, num_classes: int) -> float | None:
    """The share of the ``trained`` strokes (those the model saw: drawn before it was saved, and
    still there in ``current``) that the model's ``mask`` contradicts, when the model is not to be
    trusted on this image; else ``None``.

    Not trusted: more than :data:`DISTRUST_ERROR` of them contradicted, and ``current`` has strokes
    of every class the mask shows on 1 % of the image or more, so the strokes alone make a whole
    mask. An early model (a few epochs on a few images) fails its own training strokes by 6–54 %
    on weizmann_horse, and its sure regions, which a correction keeps where nobody drew, made the
    stored masks of the annotated images worse than their strokes alone (0.672 against 0.857 mIoU
    on 10 images); a model trained long enough fails them by 0–2 % and its correction is better
    (0.859 against 0.836 on 20). Strokes drawn after the model (corrections of its mask) are not
    counted: the model never saw them.
    """
    if trained is None:
        return None
    seen = (trained != 255) & (current == trained)
    if not seen.any():
        return None
    err = float((mask[seen] != trained[seen]).mean())
    if err <= DISTRUST_ERROR:
        return None
    shown = np.bincount(mask.ravel(), minlength=256)[:num_classes] >= 0.01 * mask.size
    drawn = np.zeros(num_classes, bool)
    drawn[np.unique(current[current != 255])] = True
    return err if not (shown & ~drawn).any() else None


def missed_tagged(mask: np.ndarray, tags: dict, tags_mask: np.ndarray, num_classes: int) -> list[int]:
    """The classes tagged present (``tags`` ``{class: "present" | "absent"}``) that the model's
    ``mask`` does not show and the tags' pseudo-mask ``tags_mask`` does (a class shows when it holds
    :func:`segmenter.cam.shown_classes`); ``[]`` when there are none or when
    ``tags_mask`` shows a class tagged absent since (it is stale).

    A model trained on tag pseudo-masks learns the large classes and drops the small ones: on 300
    camvid_tiles (tags only, 10 epochs) its masks of the tagged images scored 0.280 mIoU against
    0.297 for their tag pseudo-masks, and it misses a class tagged present on 82 % of them; keeping
    the tags' mask where the model misses a class it shows gives 0.292, while a model that shows
    every tagged class (trained on more than tags) keeps its mask."""
    from .cam import shown_classes

    present = np.zeros(num_classes, bool)
    absent = np.zeros(num_classes, bool)
    for c, st in tags.items():
        if 0 <= c < num_classes:
            present[c], absent[c] = st == "present", st == "absent"
    in_tags, in_model = shown_classes(tags_mask, num_classes), shown_classes(mask, num_classes)
    if (in_tags & absent).any():
        return []
    return [int(c) for c in np.flatnonzero(present & in_tags & ~in_model)]


def predict_project(project, model: str | None = None, image_ids=None, *, device: str = "auto", tta: bool = False,
                    mode: str = "resize", batch_size: int = 8, callback=None, cancel=None,
                    scribbles: bool = True, layer: str | None = None) -> PredictSummary:
    """Predict masks for ``image_ids`` (default: every image) and save them as kind ``predicted``
    with the model version, a confidence map and the image's uncertainty. Classes tagged absent
    on an image are suppressed. On an image with strokes (in scribble ``layer``; default: the
    project's current layer, as the app draws in) the prediction is
    corrected by them, as the app's live preview does (:func:`segmenter.preview.correct_prediction`:
    every stroke keeps its class, the predicted regions no stroke contradicts keep theirs; strokes of
    a class tagged absent are left out); ``scribbles=False`` stores the model's own output. Where the
    model contradicts the strokes it was trained on (:func:`distrusted_on`), the mask stored is the
    strokes' own pseudo-mask (``PredictSummary.from_strokes`` names those images). On an image
    without strokes whose pseudo-mask comes from its tags, where the model misses a class tagged
    present that the tags' mask shows (:func:`missed_tagged`), the mask stored is the tags' mask
    (``PredictSummary.from_tags``). ``scribbles=False`` stores the model's own output everywhere.
    Images whose file is missing or unreadable are skipped (``PredictSummary.unreadable``); when
    none can be read, :class:`~annotations.errors.ImageError` names them and the remedy.
    ``callback(done, total)`` is called after each batch (``done`` counts the skipped images too)."""
    from annotations.errors import ImageError, NotFoundError

    if batch_size < 1:
        raise SegmenterError(f"the batch size must be at least 1, got {batch_size}.")
    path = resolve_model(project, model)
    pred = Predictor.from_checkpoint(path, expected_classes=project.class_names, device=device, tta=tta,
                                     mode=mode, batch_size=batch_size)
    ids = list(image_ids) if image_ids is not None else [im.id for im in project.images()]
    if not ids:
        raise NoLabelsError("the project has no images to predict.")
    version = pred.cfg.version or path.stem
    source = f"model:{pred.cfg.arch}/{pred.cfg.encoder}"
    saved = model_saved_utc(path)
    done: list = []
    from_strokes: list = []
    from_tags: list = []
    unreadable: list = []
    removed: list = []  # removed from the project meanwhile (another window, the command line)
    for s in range(0, len(ids), batch_size):
        if cancel is not None and cancel.is_set():
            break
        chunk, images = [], []
        for i in ids[s:s + batch_size]:
            try:
                images.append(project.load_image(i))
                chunk.append(i)
            except NotFoundError:
                removed.append(i)
            except ImageError:  # its file is missing or damaged: the others go on, the summary names it
                unreadable.append(project.image_info(i))
        if not chunk:  # no file of this batch can be read
            if callback is not None:
                callback(len(done) + len(unreadable) + len(removed), len(ids))
            continue
        absent = [[c for c, st in project.tags(i).items() if st == "absent"] for i in chunk]
        for i, im, ab, p in zip(chunk, images, absent, pred.predict(images, absent=absent)):
            try:
                done.append(_store_prediction(project, i, im, ab, p, pred, source, version, saved, layer,
                                              scribbles, from_strokes, from_tags))
            except NotFoundError:
                removed.append(i)
        if callback is not None:
            callback(len(done) + len(unreadable) + len(removed), len(ids))
    if unreadable and not done and not (cancel is not None and cancel.is_set()):
        raise ImageError("no mask was predicted; " + project.files_note(unreadable, "skipped"))
    done.sort(key=lambda t: -t[2])
    note = project.files_note(unreadable, "skipped") if unreadable else ""
    return PredictSummary(version, done, from_strokes, from_tags, [im.name for im in unreadable], note, removed)


def _store_prediction(project, i, im, ab, p, pred, source, version, saved, layer, scribbles, from_strokes,
                      from_tags) -> tuple:
    """Store image ``i``'s prediction ``p`` (corrected by its strokes, or its strokes' or tags' own
    mask where the model is not to be trusted, see :func:`predict_project`); ``(id, name, uncertainty)``."""
    from .preview import correct_prediction, without_absent
    from .pseudo import DEFAULT_METHOD, get_method

    mask, conf, src, unc = p.mask, p.confidence, source, p.uncertainty
    name = project.image_info(i).name
    scr = project.scribbles(i, layer=layer) if scribbles else None
    if scr is not None:
        scr = without_absent(scr, ab)
    if scr is not None and (scr != 255).any():
        # the strokes the model trained on: those drawn before it was saved
        trained = scr if saved is None else project.scribbles_at(i, saved, layer=layer)
        trained = None if trained is None else without_absent(trained, ab)
        err = distrusted_on(mask, trained, scr, pred.cfg.num_classes)
        if err is not None:  # an early model: the strokes lead, as in the live preview before it
            r = get_method(None)(im, scr, pred.cfg.num_classes, background=project.background_index)
            src = f"{DEFAULT_METHOD}(strokes; {source} contradicts {err:.0%} of them)"
            from_strokes.append(name)
            # the mask is the strokes', so is its uncertainty (the model's sent a reviewer to it first)
            unc = image_uncertainty(r.probs)[0]
        else:
            r = correct_prediction(im, scr, mask, pred.cfg.num_classes, conf, background=project.background_index)
            src = f"{source}+{DEFAULT_METHOD}(strokes)"
        mask, conf = r.mask, r.confidence
    elif scribbles and (info := project.mask_info(i, "pseudo")) and info.source.startswith("tags:"):
        tags_mask = project.mask(i, "pseudo")
        missed = missed_tagged(mask, project.tags(i), tags_mask, pred.cfg.num_classes)
        if missed:  # the model dropped a tagged class: the tags' own mask leads
            names = ", ".join(project.class_names[c] for c in missed)
            tags_conf = project.confidence(i, "pseudo")
            lab = tags_mask != 255
            mask = np.where(lab, tags_mask, mask)
            if tags_conf is not None:
                conf = np.where(lab, tags_conf, conf).astype(np.float32)
            src = f"{info.source}({source} misses {names})"
            from_tags.append(name)
    project.save_mask(i, mask, "predicted", source=src, model_version=version,
                      confidence=conf, uncertainty=unc)
    return i, name, unc
