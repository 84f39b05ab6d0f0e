"""The weak-supervision trainer: one run mixes every kind of label, per image.

=================  ====================================================================
label              loss
=================  ====================================================================
full mask          cross-entropy (``final``/``imported`` masks)
scribbles          partial cross-entropy on scribbled pixels (+ their pseudo-mask, see round 0)
sparse labels      gated CRF loss on local windows, for images without a dense label (strokes
                   alone when ``propagate="none"``, tags, unlabeled images, coarse masks)
pseudo-mask        cross-entropy weighted per pixel by its confidence
coarse mask        cross-entropy with the boundary band ignored / down-weighted (see data.py)
image tags         multi-label BCE of the classification head (smp ``aux_params``); classes
                   tagged absent are pushed to zero probability (and suppressed at prediction)
unlabeled          self-training (default): at every refinement point an EMA teacher predicts the
                   unlabeled images (flip TTA); its confident pixels become confidence-weighted
                   pseudo-labels that the student learns under strong photometric augmentation.
                   ``mean_teacher``: the teacher predicts every step instead (one more forward
                   pass per unlabeled image per step, hence slower)
=================  ====================================================================

Round 0 (``TrainConfig.propagate``, default ``hybrid``): before training, every scribbled image
without a dense label gets a pseudo-mask from :mod:`segmenter.pseudo` (strokes kept as hard
labels), weighted by its per-pixel confidence; partial cross-entropy on the strokes stays on.

Rounds of refinement (``TrainConfig.rounds``): after a share of the epochs the model predicts
every weakly labelled training image; with ``refine="pseudo"`` the propagate method runs again
with the model's probabilities as its prior (``refine="crf"``: a mean-field CRF step), scribbles
as hard constraints, and the result becomes the confidence-weighted pseudo-mask for the next
epochs; refinement stops once fewer than ``refine_tol`` of the pixels change.

Use::

    data = TrainSet.build(samples, num_classes, size=128)
    result = Trainer(data, ModelConfig(classes, size=128), TrainConfig(epochs=10)).fit()

Progress goes to :class:`TrainCallback` objects; a ``cancel`` object with ``is_set()`` (e.g. a
``threading.Event``) is checked every step and stops the run cleanly, keeping the last
checkpoint (written at the end of every epoch).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import ddp
from .data import COARSE, FULL, IGNORE, PSEUDO, SCRIBBLES, TAGS, Augmenter, TrainSet, images_to_tensor, normalize, photometric
from .errors import CheckpointError, SegmenterError, TrainingStopped
from .models import ModelConfig, create_model, load_checkpoint, mark_training, save_checkpoint, unmark_training

SEMI_METHODS = ("self_training", "mean_teacher", "none")


@dataclass
class TrainConfig:
    """Training settings (validated). Loss weights multiply the terms of the module table."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    seed: int = 0
    device: str = "auto"
    amp: bool = True                # mixed precision on CUDA (ignored on CPU)
    augment: str = "light"          # none | light | medium
    dice_weight: float = 1.0        # soft Dice on dense labels (full, coarse, pseudo)
    crf_weight: float = 0.1
    crf_radius: int = 3
    crf_sigma_rgb: float = 0.1
    crf_sigma_xy: float = 3.0
    crf_downscale: int = 2
    tag_weight: float = 0.2
    absent_weight: float = 1.0
    semi: str = "self_training"     # for unlabeled images: self_training | mean_teacher | none
    unlabeled_weight: float = 1.0
    unlabeled_threshold: float = 0.9
    ema_decay: float = 0.99
    rampup: float = 0.3             # share of the steps over which the unlabeled weight ramps up
    rounds: int = 3                 # training rounds; refinement between rounds
    refine_after: float | None = None  # share of the epochs before the first refinement; None = auto (0.5, or
                                    # 0.2 when no weakly labelled image has strokes: see Trainer._refine_share)
    refine_iterations: int = 5
    refine_tol: float = 0.005       # stop refining when fewer pixels than this change
    pseudo_weight: float = 1.0
    confidence_power: float = 1.0   # pseudo-label weight = pseudo_weight x confidence ** power (sharpens squeezed confidences)
    propagate: str = "hybrid"       # segmenter.pseudo method that turns scribbles into pseudo-masks first; none = off
    refine: str = "auto"            # refinement between rounds: pseudo (the propagate method with the model as
                                    # prior) | crf | auto (pseudo, or crf when propagate is none)
    refine_prior_weight: float = 1.0  # weight of the model's probabilities in the pseudo rerun
    refine_keep_previous: bool = True  # the rerun's prior is model x previous pseudo-mask (a weak model cannot undo good labels)
    checkpoint: str | None = None   # stem or .safetensors path, written every epoch
    resume: str | None = None
    encoder_weights: str | None = None  # local .safetensors of pretrained encoder weights
    background: int = 0  # the pseudo-labellers' background class (Project.background_index)
    log_every: int = 1

    def __post_init__(self):
        if self.epochs < 1:
            raise SegmenterError(f"epochs must be at least 1, got {self.epochs}.")
        if self.encoder_weights:
            from .models import check_encoder_weights_path

            check_encoder_weights_path(self.encoder_weights)
        if self.batch_size < 1:
            raise SegmenterError(f"batch size must be at least 1, got {self.batch_size}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SegmenterError(f"learning rate must be positive, got {self.lr}.")
        if self.semi not in SEMI_METHODS:
            raise SegmenterError(f"unknown semi-supervised method '{self.semi}'; use one of {', '.join(SEMI_METHODS)}.")
        if self.augment not in ("none", "light", "medium"):
            raise SegmenterError(f"unknown augmentation '{self.augment}'; use none, light or medium.")
        if self.rounds < 1:
            raise SegmenterError(f"rounds must be at least 1, got {self.rounds}.")
        if self.refine_after is not None and not 0 < self.refine_after < 1:
            raise SegmenterError("refine_after must be between 0 and 1.")
        if not 0 <= self.unlabeled_threshold <= 1 or not 0 <= self.ema_decay < 1:
            raise SegmenterError("unlabeled_threshold must be in [0, 1] and ema_decay in [0, 1).")
        if self.refine not in ("auto", "pseudo", "crf"):
            raise SegmenterError(f"unknown refinement '{self.refine}'; use auto, pseudo or crf.")
        if self.refine == "auto":
            self.refine = "crf" if self.propagate == "none" else "pseudo"
        if self.propagate != "none":
            from .pseudo import list_methods

            if self.propagate not in list_methods():
                raise SegmenterError(f"unknown pseudo-labelling method '{self.propagate}'; use none or one of "
                                     f"{', '.join(list_methods())}.")
        if self.refine == "pseudo" and self.propagate == "none":
            raise SegmenterError("refine=pseudo reruns the propagate method; it cannot be used with propagate=none.")
        for k in ("dice_weight", "crf_weight", "tag_weight", "absent_weight", "unlabeled_weight", "pseudo_weight",
                  "refine_prior_weight", "confidence_power"):
            if getattr(self, k) < 0:
                raise SegmenterError(f"{k} must not be negative.")
        self.device = resolve_device_name(self.device)


def resolve_device_name(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; checks ``cuda`` is available."""
    d = str(device or "auto").lower()
    if d not in ("auto", "cpu", "cuda") and not d.startswith("cuda:"):
        raise SegmenterError(f"unknown device '{device}'; use auto, cpu or cuda.")
    if d == "auto" or d.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return "cuda" if d == "auto" else d
        if d != "auto":
            raise SegmenterError("CUDA was asked for but no GPU is available; use --device cpu.")
        return "cpu"
    return d


@dataclass
class Progress:
    """What a callback sees at each step / epoch end."""

    epoch: int            # 0-based epoch in progress
    epochs: int
    step: int             # step within the epoch (1-based, after the step)
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float           # mean loss of this epoch's labelled steps so far (a step whose batch has a label)
    losses: dict          # ... and of each term
    lr: float
    images_per_s: float
    eta_s: float
    phase: str = "train"  # train | refine


class TrainCallback:
    """Override what you need; every method is optional."""

    def on_start(self, info: dict) -> None: ...
    def on_step(self, p: Progress) -> None: ...
    def on_epoch_end(self, p: Progress, metrics: dict) -> None: ...
    def on_round_end(self, round_index: int, changed: float) -> None: ...
    def on_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    """Statistics of a run. ``images_per_s``: student images trained per second of the training
    loop (data, augmentation, forward/backward of every loss term, teacher passes, optimiser);
    refinement inference (``refine_seconds``) and caching are outside the loop and in
    ``train_seconds``."""

    checkpoint: str | None
    model_config: dict
    epochs_done: int
    steps: int
    images_seen: int
    train_seconds: float
    loop_seconds: float
    refine_seconds: float
    images_per_s: float
    history: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    refine_at: list = field(default_factory=list)  # epochs after which refinement was scheduled
    stopped: str | None = None
    message: str = ""
    world_size: int = 1

    def to_json(self) -> dict:
        return asdict(self)


def _cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def needs_two_per_batch(model, in_channels: int, size: int, device) -> bool:
    """Whether a batch norm of ``model`` sees a single value per channel of each image (a globally
    pooled branch: DeepLabV3 / V3+'s ASPP pooling, PAN, UPerNet), so that in training a batch of one
    image is an error ("Expected more than 1 value per channel"). Found with one forward pass of a
    ``size`` px image in eval mode (no statistics change); a model that cannot run at that size at
    all is left to fail in training, with the training's message."""
    import torch

    single = []
    hooks = [m.register_forward_pre_hook(lambda _m, inp: single.append(inp[0][0, 0].numel() == 1))
             for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size, device=device))
    except RuntimeError:
        return False
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return any(single)


def _pseudo_image(image: np.ndarray) -> np.ndarray:
    """A cached training image as the pseudo-labellers take it: ``(S, S, 1)`` (``--channels 1``)
    becomes ``(S, S)``."""
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


class Trainer:
    """Trains an smp model on a :class:`TrainSet`; see the module docstring."""

    def __init__(self, data: TrainSet, model_config: ModelConfig, config: TrainConfig | None = None,
                 callbacks=(), cancel=None, where: str = "the command line"):
        self.data = data
        self.mcfg = model_config
        self.cfg = config or TrainConfig()
        self.callbacks = list(callbacks)
        self.cancel = cancel
        #: who runs it, for another training started meanwhile (:func:`segmenter.models.trainings_note`)
        self.where = where
        if model_config.num_classes != data.num_classes:
            raise SegmenterError(f"the model has {model_config.num_classes} classes, the data {data.num_classes}.")
        if model_config.size != data.size or model_config.in_channels != data.channels:
            raise SegmenterError("the training set was cached at another size or channel count than the model's.")

    # ------------------------------------------------------------------ helpers
    def _emit(self, name, *args):
        if self.dist.is_main:
            for cb in self.callbacks:
                getattr(cb, name)(*args)

    def _weak(self) -> np.ndarray:
        """Indices of the images whose dense label comes from scribbles or a pseudo-mask."""
        k = self.data.kind
        return np.flatnonzero(((k & (SCRIBBLES | PSEUDO)) > 0) & ((k & (FULL | COARSE)) == 0))

    def _refine_epochs(self, self_training: bool = False) -> list[int]:
        """Epoch counts after which refinement runs (empty when nothing is weakly labelled and no
        unlabeled image is self-trained)."""
        if self.cfg.rounds < 2 or not (len(self._weak()) or self_training):
            return []
        E, R = self.cfg.epochs, self.cfg.rounds
        first = E * self._refine_share()
        out = sorted({max(1, int(round(first + (E - first) * r / (R - 1)))) for r in range(R - 1)})
        return [e for e in out if e < E]

    def _refine_share(self) -> float:
        """``refine_after``, or when it is None: 0.2 if weakly labelled images exist and none has a
        stroke (tag pseudo-masks, stored pseudo-masks: coarse masks that a model trained across the
        images overtakes early; camvid_tiles tags -> val 0.245 refining after half the epochs,
        0.277 after a fifth), else 0.5 (scribble propagations are already close to the truth: horse
        0.825 refining after half, 0.822 after 0.4)."""
        if self.cfg.refine_after is not None:
            return self.cfg.refine_after
        weak = self._weak()
        if len(weak) and not (self.data.kind[weak] & SCRIBBLES).any():
            return 0.2
        return 0.5

    def _stopped(self, nan: bool) -> tuple[bool, bool]:
        """(cancelled, nan) agreed across processes."""
        cancelled = bool(self.cancel is not None and self.cancel.is_set())
        if not self.dist.enabled:
            return cancelled, nan
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(cancelled), float(nan)], device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t)
        return bool(t[0] > 0), bool(t[1] > 0)

    # ------------------------------------------------------------------ refinement
    def _propagate(self) -> int:
        """Round 0: scribbles -> confidence-weighted pseudo-masks with the ``propagate`` method of
        :mod:`segmenter.pseudo`, for scribbled images that have no dense label yet (a stored
        pseudo-mask is kept). Returns how many images got one."""
        from .pseudo import get_method

        d, cfg = self.data, self.cfg
        if cfg.propagate == "none":
            return 0
        todo = np.flatnonzero(((d.kind & SCRIBBLES) > 0) & ((d.kind & (FULL | COARSE | PSEUDO)) == 0))
        method = get_method(cfg.propagate)
        for i in todo:
            r = method(_pseudo_image(d.images[i]), d.scribbles[i], d.num_classes, background=cfg.background)
            self._set_pseudo(i, r.mask, r.confidence)
        return len(todo)

    def _set_pseudo(self, i, mask, confidence) -> int:
        """Store a pseudo-mask for cached image ``i``; returns how many of its pixels changed."""
        d = self.data
        changed = int((mask != d.dense[i]).sum())
        d.dense[i] = mask
        w = np.asarray(confidence, np.float32) ** self.cfg.confidence_power
        d.weight[i] = np.round(w * 255 * self.cfg.pseudo_weight).clip(0, 255).astype(np.uint8)
        d.kind[i] |= PSEUDO
        return changed

    def _previous_probs(self, i) -> np.ndarray:
        """``(C, S, S)`` float32 probabilities of image ``i``'s current pseudo-mask: its confidence on
        its label, the rest shared by the other classes (uniform where it has no label)."""
        d = self.data
        C = d.num_classes
        lab = d.dense[i]
        w = np.clip(d.weight[i].astype(np.float32) / 255.0 / max(self.cfg.pseudo_weight, 1e-6), 0.0, 1.0)
        conf = np.clip(w ** (1.0 / max(self.cfg.confidence_power, 1e-6)), 1.0 / C + 1e-3, 0.99)
        p = np.repeat(((1.0 - conf) / (C - 1))[None], C, 0)
        has = lab != IGNORE
        yy, xx = np.nonzero(has)
        p[lab[has], yy, xx] = conf[has]
        p[:, ~has] = 1.0 / C
        return p.astype(np.float32)

    def _refine(self, model) -> float:
        """Predict weakly labelled images and refine: with ``refine="pseudo"`` the propagate method
        reruns on scribbled images with the model's probabilities (times the previous pseudo-mask's,
        ``refine_keep_previous``) as its prior; otherwise (and for images without scribbles) a CRF
        step from the same probabilities, scribbles clamped. Stores the results as pseudo-masks
        and returns the fraction of their pixels whose label changed."""
        import torch

        from .losses import crf_refine

        d, cfg = self.data, self.cfg
        weak = self._weak()
        method = None
        if cfg.refine == "pseudo":
            from .pseudo import get_method

            method = get_method(cfg.propagate, prior_weight=cfg.refine_prior_weight)
        changed = total = 0
        for idx, x01, probs in self._predictions(model, weak):
            if cfg.refine_keep_previous:  # prior = model x previous pseudo-mask: a weak model cannot undo good labels
                prev = torch.from_numpy(np.stack([self._previous_probs(i) for i in idx])).to(self.device)
                probs = probs * prev
                probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
            # images the pseudo method reruns on need no CRF step; the rest (no method, or no strokes) do
            rerun = np.array([method is not None and bool((d.scribbles[i] != IGNORE).any()) for i in idx])
            lab = conf = None
            if not rerun.all():
                sel = torch.from_numpy(np.flatnonzero(~rerun)).to(self.device)
                scr = torch.from_numpy(d.scribbles[idx[~rerun]]).to(self.device)
                q = crf_refine(probs[sel], x01[sel], scr, iterations=cfg.refine_iterations,
                               radius=cfg.crf_radius, sigma_rgb=cfg.crf_sigma_rgb, sigma_xy=cfg.crf_sigma_xy)
                conf, lab = q.max(1)
                lab = lab.to(torch.uint8).cpu().numpy()
                conf = conf.float().cpu().numpy()
            probs_np = probs.cpu().numpy() if rerun.any() else None
            k = 0
            for j, i in enumerate(idx):
                if rerun[j]:
                    r = method(_pseudo_image(d.images[i]), d.scribbles[i], d.num_classes, prior=probs_np[j],
                               background=cfg.background)
                    changed += self._set_pseudo(i, r.mask, r.confidence)
                else:
                    changed += self._set_pseudo(i, lab[k], conf[k])
                    k += 1
                total += d.dense[i].size
        return changed / max(1, total)

    def _predictions(self, model, indices: np.ndarray, batch: int = 32):
        """Yield ``(idx, images in [0, 1], probabilities)`` for cached images ``indices`` in batches
        (:meth:`_predict`), the model in eval mode without gradients; train mode is restored after."""
        import torch

        model.eval()
        try:
            with torch.no_grad():
                for s in range(0, len(indices), batch):
                    idx = indices[s:s + batch]
                    yield (idx, *self._predict(model, idx))
        finally:
            model.train()

    def _predict(self, model, idx):
        """``(images in [0, 1], class probabilities)`` of cached images ``idx`` with flip TTA, classes
        tagged absent suppressed (no_grad and eval mode are the caller's, see :meth:`_predictions`)."""
        import torch

        from .losses import suppress_absent

        d = self.data
        x01 = images_to_tensor(d.images[idx], self.device)
        x = normalize(x01, self.mcfg.mean, self.mcfg.std)
        with self._autocast():
            lo = _logits(model(x)) + torch.flip(_logits(model(torch.flip(x, dims=[3]))), dims=[3])
        lo = suppress_absent(lo.float() / 2, torch.from_numpy(d.tags[idx]).to(self.device))
        return x01, torch.softmax(lo, 1)

    def _label_unlabeled(self, model, unlabeled: np.ndarray) -> float:
        """Self-training: the (EMA) model labels the unlabeled images; pixels at least
        ``unlabeled_threshold`` confident become pseudo-labels weighted by ``unlabeled_weight`` x
        confidence, the rest are ignored. Returns the share of pixels kept."""
        import torch

        d, cfg = self.data, self.cfg
        kept = total = 0
        for idx, _, probs in self._predictions(model, unlabeled):
            conf, lab = probs.max(1)
            conf, lab = conf.cpu().numpy(), lab.to(torch.uint8).cpu().numpy()
            ok = conf >= cfg.unlabeled_threshold
            d.dense[idx] = np.where(ok, lab, IGNORE)
            d.weight[idx] = np.round(np.where(ok, conf, 0.0) * cfg.unlabeled_weight * 255).clip(0, 255).astype(np.uint8)
            kept += int(ok.sum())
            total += ok.size
        return kept / max(1, total)

    def _autocast(self):
        import contextlib

        import torch

        if self.device.startswith("cuda") and self.cfg.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ main loop
    def fit(self) -> TrainResult:
        import torch

        from . import losses as L

        cfg, d, mcfg = self.cfg, self.data, self.mcfg
        t_start = time.perf_counter()
        self.dist = ddp.setup(cfg.device)
        self.device = ddp.device_for(self.dist, cfg.device)
        mark = mark_training(cfg.checkpoint, self.where) if cfg.checkpoint and self.dist.is_main else None
        try:
            torch.manual_seed(cfg.seed)
            if self.device.startswith("cuda"):
                torch.backends.cudnn.benchmark = True
            gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.dist.rank)

            start_epoch, global_step, history, rounds = 0, 0, [], []
            ckpt = None
            if cfg.resume:
                ckpt = load_checkpoint(cfg.resume, expected_classes=mcfg.classes)
                for k in ("arch", "encoder", "size", "in_channels"):
                    if getattr(ckpt.config, k) != getattr(mcfg, k):
                        raise CheckpointError(f"cannot resume: the checkpoint's {k} is {getattr(ckpt.config, k)}, "
                                              f"this run's is {getattr(mcfg, k)}.")
                model = ckpt.model
                mcfg.aux_head = ckpt.config.aux_head
                start_epoch = int(ckpt.state.get("epoch", 0))
                global_step = int(ckpt.state.get("global_step", 0))
                history = list(ckpt.state.get("history", []))
                rounds = list(ckpt.state.get("rounds", []))
            else:
                model = create_model(mcfg, encoder_weights=cfg.encoder_weights)
            model.to(self.device).train()
            raw_model = model
            pairs = needs_two_per_batch(raw_model, mcfg.in_channels, mcfg.size, self.device)
            model = ddp.wrap(model, self.dist, self.device)

            unl_idx = d.kind == 0
            unlabeled = np.flatnonzero(unl_idx)
            semi_on = cfg.semi != "none" and len(unlabeled) > 0 and cfg.unlabeled_weight > 0
            use_teacher = semi_on and cfg.semi == "mean_teacher"   # teacher forward every step
            self_train = semi_on and cfg.semi == "self_training"   # teacher labels at refinement points
            teacher = None
            if semi_on:
                teacher = copy.deepcopy(raw_model).eval()
                if ckpt is not None and ckpt.teacher_state() is not None:
                    teacher.load_state_dict(ckpt.teacher_state())
                for p in teacher.parameters():
                    p.requires_grad_(False)

            opt = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            if ckpt is not None and ckpt.optimizer_state() is not None:
                try:
                    opt.load_state_dict(ckpt.optimizer_state())
                except (ValueError, KeyError, RuntimeError) as e:
                    raise CheckpointError(f"cannot resume the optimiser state ({e}).") from None
            use_scaler = self.device.startswith("cuda") and cfg.amp and not torch.cuda.is_bf16_supported()
            scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
            augment = Augmenter(cfg.augment, seed=cfg.seed + self.dist.rank)

            n_local = len(ddp.shard(len(d), self.dist, 0, cfg.seed)) if self.dist.enabled else len(d)
            steps_per_epoch = max(1, math.ceil(n_local / cfg.batch_size))
            total_steps = steps_per_epoch * cfg.epochs
            t0 = time.perf_counter()
            propagated = self._propagate()
            propagate_seconds = time.perf_counter() - t0
            refine_at = self._refine_epochs(self_train)
            has_weak = len(self._weak()) > 0
            refine_done = not has_weak or (bool(rounds) and rounds[-1] < cfg.refine_tol)
            crf_on = cfg.crf_weight > 0
            # the CRF loss regularises sparse labels: images with no dense label once propagation has
            # run (strokes alone, tags, unlabeled, coarse masks); on dense pseudo-masks it only pulls
            # the model towards colour edges against the labels (acdc 0.661 with it, 0.679 without).
            # Unlabeled images leave it once self-training has labelled them.
            crf_images = torch.from_numpy(((d.kind & (FULL | PSEUDO)) == 0).astype(np.float32))
            unl_t = torch.from_numpy(unlabeled)

            self._emit("on_start", {"images": len(d), "counts": d.counts(), "groups": label_groups(d.kind),
                                    "epochs": cfg.epochs,
                                    "steps_per_epoch": steps_per_epoch, "device": self.device,
                                    "world_size": self.dist.world_size, "refine_at": refine_at,
                                    "propagated": propagated,
                                    "start_epoch": start_epoch})
            refine_seconds = propagate_seconds
            if start_epoch > 0 and any(e <= start_epoch for e in refine_at):
                t0 = time.perf_counter()
                if not refine_done:
                    rounds.append(self._refine(teacher or raw_model))
                if self_train:
                    self._label_unlabeled(teacher, unlabeled)
                    crf_images[unl_t] = 0.0
                refine_seconds += time.perf_counter() - t0

            loop_seconds, images_seen = 0.0, 0
            stopped, message = None, ""
            ckpt_path = None
            epoch = start_epoch
            last = {}
            for epoch in range(start_epoch, cfg.epochs):
                order = ddp.shard(len(d), self.dist, epoch, cfg.seed) if self.dist.enabled \
                    else list(np.random.default_rng(cfg.seed + epoch).permutation(len(d)))
                sums: dict = {}
                # the progress shows the mean loss of this epoch's labelled steps so far: a batch of
                # unlabeled images alone (before self-training labels them) has no label loss (0, or
                # the CRF term alone), and showing it made training look converged ("loss 0.0000")
                shown: dict = {}
                shown_steps = 0
                for step in range(steps_per_epoch):
                    t0 = time.perf_counter()
                    cancelled, _ = (self._stopped(False) if self.dist.enabled else
                                    (self.cancel is not None and self.cancel.is_set(), False))
                    if cancelled:
                        stopped = "cancelled"
                        break
                    idx = np.asarray(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
                    if len(idx) == 0:
                        idx = np.asarray(order[:cfg.batch_size])
                    if len(idx) == 1 and pairs:  # a batch norm of this model needs two images (see needs_two_per_batch)
                        other = [j for j in order if j != idx[0]]
                        idx = np.append(idx, other[0] if other else idx[0])
                    imgs = np.empty((len(idx),) + d.images.shape[1:], np.uint8)
                    labs = np.empty((len(idx), d.size, d.size, 3), np.uint8)
                    for j, i in enumerate(idx):
                        stack = np.stack([d.dense[i], d.weight[i], d.scribbles[i]], -1)
                        imgs[j], labs[j] = augment(d.images[i], stack)
                    x01 = images_to_tensor(imgs, self.device)
                    if cfg.augment != "none":
                        x01 = photometric(x01, strong=False, generator=gen)
                    lab_t = torch.from_numpy(labs).to(self.device).long()
                    dense, weight, scr = lab_t[..., 0], lab_t[..., 1].float() / 255.0, lab_t[..., 2]
                    tags = torch.from_numpy(d.tags[idx]).to(self.device)
                    unl = torch.from_numpy(unl_idx[idx]).to(self.device)
                    x_in = x01
                    if semi_on and bool(unl.any()):
                        x_in = x01.clone()
                        x_in[unl] = photometric(x01[unl], strong=True, generator=gen)

                    lr = _cosine_lr(global_step, total_steps, cfg.lr, cfg.warmup_steps)
                    for g in opt.param_groups:
                        g["lr"] = lr
                    with self._autocast():
                        out = model(normalize(x_in, mcfg.mean, mcfg.std))
                    logits, tag_logits = (out if isinstance(out, tuple) else (out, None))
                    logits = logits.float()
                    probs = torch.softmax(logits, 1)
                    terms = {"dense": L.weighted_ce(logits, dense, weight), "scribble": L.weighted_ce(logits, scr)}
                    if cfg.dice_weight > 0:
                        terms["dice"] = cfg.dice_weight * L.weighted_dice(probs, dense, weight)
                    if crf_on:
                        cw = crf_images[idx]
                        terms["crf"] = cfg.crf_weight * L.gated_crf_loss(
                            probs, x01, cfg.crf_radius, cfg.crf_sigma_rgb, cfg.crf_sigma_xy, cfg.crf_downscale,
                            image_weight=cw.to(self.device)) if bool(cw.any()) else logits.sum() * 0.0
                    if tag_logits is not None:  # always in the graph (DDP needs every parameter used)
                        terms["tag"] = cfg.tag_weight * L.tag_loss(tag_logits, tags)
                    if cfg.absent_weight > 0:
                        terms["absent"] = cfg.absent_weight * L.absent_loss(probs, tags)
                    if use_teacher:
                        ramp = min(1.0, global_step / max(1.0, cfg.rampup * total_steps))
                        ramp = math.exp(-5 * (1 - ramp) ** 2)
                        if bool(unl.any()):
                            with torch.no_grad(), self._autocast():
                                t_probs = torch.softmax(_logits(teacher(normalize(x01[unl], mcfg.mean, mcfg.std))).float(), 1)
                            terms["unlabeled"] = ramp * cfg.unlabeled_weight * L.confident_pseudo_ce(
                                logits[unl], t_probs, cfg.unlabeled_threshold) * float(unl.float().mean())
                        else:
                            terms["unlabeled"] = logits.sum() * 0.0
                    loss = sum(terms.values())
                    loss_v = float(loss.detach())
                    bad = not math.isfinite(loss_v)
                    if self.dist.enabled:
                        _, bad = self._stopped(bad)
                    if bad:
                        stopped = "nan"
                        break
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    if teacher is not None:
                        a = min(cfg.ema_decay, 1 - 1 / (global_step + 2))
                        with torch.no_grad():
                            for tp, sp in zip(teacher.parameters(), raw_model.parameters()):
                                tp.lerp_(sp.detach(), 1 - a)
                            for tb, sb in zip(teacher.buffers(), raw_model.buffers()):
                                tb.copy_(sb)
                    global_step += 1
                    images_seen += len(idx)
                    dt = time.perf_counter() - t0
                    loop_seconds += dt
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                    sums["loss"] = sums.get("loss", 0.0) + loss_v
                    if bool((d.kind[idx] != 0).any()) or bool(d.weight[idx].any()):  # a labelled step
                        shown_steps += 1
                        for k, v in terms.items():
                            shown[k] = shown.get(k, 0.0) + float(v.detach())
                        shown["loss"] = shown.get("loss", 0.0) + loss_v
                    if (step + 1) % cfg.log_every == 0 or step + 1 == steps_per_epoch:
                        ips = images_seen / loop_seconds
                        eta = (total_steps - global_step) * loop_seconds / max(1, global_step - start_epoch * steps_per_epoch)
                        if shown_steps:
                            mean_loss = shown["loss"] / shown_steps
                            mean_terms = {k: v / shown_steps for k, v in shown.items() if k != "loss"}
                        else:  # no labelled step yet this epoch
                            mean_loss, mean_terms = loss_v, {k: float(v.detach()) for k, v in terms.items()}
                        last = Progress(epoch, cfg.epochs, step + 1, steps_per_epoch, global_step, total_steps,
                                        mean_loss, mean_terms, lr, ips * self.dist.world_size, eta)
                        self._emit("on_step", last)
                if stopped:
                    break
                metrics = {k: v / steps_per_epoch for k, v in sums.items()}
                metrics["epoch"] = epoch + 1
                if epoch + 1 in refine_at:
                    t0 = time.perf_counter()
                    if not refine_done:
                        changed = self._refine(teacher or raw_model)
                        rounds.append(changed)
                        metrics["refine_changed"] = changed
                        refine_done = changed < cfg.refine_tol
                        self._emit("on_round_end", len(rounds), changed)
                    if self_train:
                        metrics["unlabeled_kept"] = self._label_unlabeled(teacher, unlabeled)
                        crf_images[unl_t] = 0.0
                    refine_seconds += time.perf_counter() - t0
                history.append(metrics)
                if cfg.checkpoint and self.dist.is_main:
                    ckpt_path = str(save_checkpoint(cfg.checkpoint, raw_model, mcfg, optimizer=opt, teacher=teacher,
                                                    state={"epoch": epoch + 1, "global_step": global_step,
                                                           "history": history, "rounds": rounds,
                                                           "train_config": asdict(cfg)}))
                if last:
                    self._emit("on_epoch_end", last, metrics)
            done = len(history)  # includes the epochs of a resumed checkpoint
            if stopped == "nan":
                kept = f" the last good checkpoint is {ckpt_path or cfg.checkpoint}" if (ckpt_path or (cfg.checkpoint and done)) \
                    else " no checkpoint was written yet"
                raise TrainingStopped(
                    f"the loss became NaN/inf at epoch {epoch + 1}; training stopped;{kept}. "
                    "Try a lower learning rate (--lr) or check the labels.")
            if stopped == "cancelled":
                message = (f"training cancelled during epoch {epoch + 1}; "
                           + (f"the last good checkpoint is {ckpt_path}" if ckpt_path else "no epoch had finished, nothing saved"))
            ips = images_seen * self.dist.world_size / loop_seconds if loop_seconds > 0 else 0.0
            result = TrainResult(checkpoint=ckpt_path, model_config=mcfg.to_json(), epochs_done=done,
                                 steps=global_step, images_seen=images_seen * self.dist.world_size,
                                 train_seconds=time.perf_counter() - t_start, loop_seconds=loop_seconds,
                                 refine_seconds=refine_seconds, images_per_s=ips, history=history, rounds=rounds,
                                 refine_at=refine_at,
                                 stopped=stopped, message=message, world_size=self.dist.world_size)
            self.model = raw_model.eval()
            self.teacher = teacher
            self._emit("on_end", result)
            return result
        finally:
            unmark_training(mark)
            ddp.cleanup(self.dist)


def label_groups(kind: np.ndarray) -> list[tuple[int, str]]:
    """``[(count, words)]``: the training images by what they are trained on, each image once (so
    the counts add up to the number of images): a full mask, else a coarse mask, else strokes
    (with the pseudo-masks made from them), else a pseudo-mask alone (from tags, or stored), else
    tags alone, else nothing (unlabeled). Groups without images are left out."""
    k = np.asarray(kind)
    full = (k & FULL) > 0
    coarse = ((k & COARSE) > 0) & ~full
    strokes = ((k & SCRIBBLES) > 0) & ~full & ~coarse
    with_pseudo = strokes & ((k & PSEUDO) > 0)
    pseudo = ((k & PSEUDO) > 0) & ~full & ~coarse & ~strokes
    tags = ((k & TAGS) > 0) & ~full & ~coarse & ~strokes & ~pseudo
    unlabeled = k == 0
    n_strokes, n_with = int(strokes.sum()), int(with_pseudo.sum())
    if n_with == n_strokes:
        strokes_words = "with strokes (pseudo-masks from them)"
    elif n_with:
        strokes_words = f"with strokes ({n_with} with pseudo-masks from them)"
    else:
        strokes_words = "with strokes"
    groups = [(int(full.sum()), "with full masks"), (int(coarse.sum()), "with coarse masks"),
              (n_strokes, strokes_words), (int(pseudo.sum()), "with pseudo-masks"),
              (int(tags.sum()), "with tags only"), (int(unlabeled.sum()), "unlabeled")]
    return [(n, words) for n, words in groups if n]


def _logits(out):
    return out[0] if isinstance(out, tuple) else out


class ProgressBar(TrainCallback):
    """A one-line text progress bar on a stream (the CLI's callback)."""

    def __init__(self, stream=None, width: int = 24):
        import sys

        self.stream = stream or sys.stderr
        self.width = width

    def on_start(self, info: dict) -> None:
        groups = info.get("groups")
        if groups is None:  # a caller's own info: the label counts (an image may be in several)
            groups = [(v, k) for k, v in info["counts"].items() if k != "images" and v]
        parts = ", ".join(f"{n} {what}" for n, what in groups)
        at = info.get("refine_at") or []
        print(f"training on {info['images']} images ({parts}) on {info['device']}"
              f"{' x' + str(info['world_size']) if info['world_size'] > 1 else ''}"
              f"{'; refinement after epoch ' + ', '.join(map(str, at)) if at else ''}", file=self.stream)

    def on_step(self, p: Progress) -> None:
        frac = p.global_step / max(1, p.total_steps)
        n = int(frac * self.width)
        eta = time.strftime("%M:%S", time.gmtime(max(0, p.eta_s)))
        self.stream.write(f"\repoch {p.epoch + 1}/{p.epochs} [{'#' * n}{'.' * (self.width - n)}] "
                          f"loss {p.loss:.4f} {p.images_per_s:.1f} img/s eta {eta} ")
        self.stream.flush()

    def on_round_end(self, round_index: int, changed: float) -> None:
        self.stream.write(f"\nrefinement round {round_index}: {changed * 100:.2f}% of pseudo-mask pixels changed\n")

    def on_epoch_end(self, p: Progress, metrics: dict) -> None:
        if "unlabeled_kept" in metrics:
            self.stream.write(f"\nself-training after epoch {metrics['epoch']}: the teacher labelled "
                              f"{metrics['unlabeled_kept'] * 100:.1f}% of the unlabeled images' pixels confidently\n")

    def on_end(self, result: TrainResult) -> None:
        self.stream.write("\n")
        self.stream.flush()
