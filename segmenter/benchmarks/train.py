"""``python -m segmenter bench train``: a model from weak labels against the same model from full masks.

Exactly ../shared/BENCHMARK.md §2::

    python -m segmenter bench train --data DIR --train-split A [--test-data DIR2] --test-split B
        --supervision full | scribbles:SET | simulated[:SEED] | tags | mixed:SPEC
        [--labeled-fraction F] [--no-unlabeled] [--limit-train N] [--epochs E] [--size PX]
        [--arch unet] [--encoder resnet18] [--seed S] [--device auto|cpu|cuda] [--out FILE]

``mixed:SPEC`` assigns the training images (seeded shuffle) to kinds of supervision by
fraction, e.g. ``mixed:full=0.1,scribbles:real=0.4,tags=0.3,coarse=0.2`` (kinds: ``full``,
``scribbles:SET``, ``simulated[:SEED]``, ``tags``, ``coarse[:PX]`` = the ground truth distorted by
PX pixels, ``unlabeled``); what the fractions leave is unlabeled.

Timing, honestly: ``images_per_s`` is training images per second of the training loop (batch
assembly, augmentation, every loss term, the teacher's forward pass on unlabeled images with
``--semi mean_teacher``, the optimiser step); the default self-training labels unlabeled images
at the refinement points, outside the loop. ``bare_images_per_s`` is a plain smp loop (same model, batch and size,
cross-entropy on random labels, random inputs already in memory) timed in the same process.
Refinement passes between rounds (``refine_seconds``) and data caching (``prepare_seconds``)
are outside both loops but inside ``train_seconds``; ``images_per_s_overall`` divides by
``train_seconds`` instead. The test images are read (and checked) once, before the training, and
kept for the scoring (up to :data:`TEST_CACHE_BYTES`); ``test_seconds`` is the scoring.
"""
from __future__ import annotations

import time

import numpy as np

from segmenter.cli import UsageError

KINDS = ("full", "scribbles", "simulated", "tags", "coarse", "unlabeled")


def register(bsub) -> None:
    p = bsub.add_parser("train", help="weakly-supervised training against full supervision",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="training dataset folder")
    p.add_argument("--train-split", default=None, help="split(s), joined with '+' (default: every image)")
    p.add_argument("--test-data", default=None, help="test dataset folder (default: --data)")
    p.add_argument("--test-split", default=None, help="test split(s) (default: every image of --test-data)")
    p.add_argument("--supervision", default="full",
                   help="full | scribbles:SET | simulated[:SEED] | tags | mixed:SPEC")
    p.add_argument("--labeled-fraction", type=float, default=1.0,
                   help="keep labels on this fraction of the training images; the rest are unlabeled")
    p.add_argument("--no-unlabeled", action="store_true",
                   help="drop the unlabeled images instead of training on them (semi-supervised baseline)")
    p.add_argument("--limit-train", type=int, default=None, help="train on N images (seeded choice)")
    p.add_argument("--limit-test", type=int, default=None, help="test on the first N test images")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--encoder-weights", default=None,
                   help="local .safetensors file of pretrained encoder weights, for the model and the tag "
                        "classifier (default: none, no download)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=None, help="training rounds with refinement between them")
    p.add_argument("--refine-after", type=float, default=None,
                   help="share of the epochs before the first refinement (default: 0.5, or 0.2 when no "
                        "weakly labelled image has strokes, e.g. tags)")
    p.add_argument("--crf-weight", type=float, default=None)
    p.add_argument("--semi", default=None, help="self_training (default) | mean_teacher | none")
    p.add_argument("--propagate", default=None,
                   help="pseudo-labelling method for scribbles before training (default hybrid; none = off)")
    p.add_argument("--refine", default=None, help="refinement between rounds: pseudo | crf")
    p.add_argument("--refine-prior-weight", type=float, default=None,
                   help="weight of the model's probabilities when the pseudo method reruns (default 1)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation at evaluation")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0 = torch's default); both loops use the same")
    p.add_argument("--bare-steps", type=int, default=2,
                   help="bare-loop steps timed after every epoch (interleaved, so both see the same CPU load)")
    p.add_argument("--save-model", default=None, help="also write the trained model to this checkpoint stem")
    p.add_argument("--out", default=None, help="JSON report path")
    p.set_defaults(func=run)


def parse_supervision(spec: str) -> list[tuple[str, str | None, float]]:
    """``spec`` -> ``[(kind, argument, fraction)]``; raises :class:`UsageError` naming the problem."""
    spec = (spec or "").strip()
    if spec.startswith("mixed:"):
        parts = [p.strip() for p in spec[len("mixed:"):].split(",") if p.strip()]
        if not parts:
            raise UsageError("--supervision mixed: needs parts like full=0.2,scribbles:real=0.8")
        out = []
        for part in parts:
            if "=" not in part:
                raise UsageError(f"--supervision mixed: '{part}' needs '=FRACTION'")
            name, frac = part.rsplit("=", 1)
            try:
                f = float(frac)
            except ValueError:
                raise UsageError(f"--supervision mixed: '{frac}' is not a number") from None
            if not 0 <= f <= 1:
                raise UsageError(f"--supervision mixed: fraction {f} is not in [0, 1]")
            out.append(_parse_kind(name) + (f,))
        if sum(f for *_, f in out) > 1 + 1e-6:
            raise UsageError("--supervision mixed: the fractions add up to more than 1")
        return out
    return [_parse_kind(spec) + (1.0,)]


def _parse_kind(s: str) -> tuple[str, str | None]:
    name, _, arg = s.partition(":")
    if name not in KINDS:
        raise UsageError(f"unknown supervision '{s}'; use full, scribbles:SET, simulated[:SEED], tags, "
                         "coarse[:PX], unlabeled or mixed:SPEC")
    if name == "scribbles" and not arg:
        raise UsageError("--supervision scribbles needs a set name, e.g. scribbles:real")
    if name in ("simulated", "coarse") and arg:
        try:
            if int(arg) < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--supervision {s}: '{arg}' must be a whole number >= 0") from None
    return name, (arg or None)


def _stable(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode()) % 100000


def coarse_mask(gt: np.ndarray, px: int, seed: int) -> np.ndarray:
    """A coarse version of ``gt``: each class region's boundary randomly grown or shrunk by up
    to ``px`` pixels and its outline simplified, like a hasty polygon."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros_like(gt)
    C = int(gt[gt != 255].max(initial=0)) + 1
    for c in range(1, C):
        region = (gt == c).astype(np.uint8)
        if not region.any():
            continue
        r = int(rng.integers(1, px + 1))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        region = cv2.dilate(region, k) if rng.random() < 0.5 else cv2.erode(region, k)
        cnts, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        poly = [cv2.approxPolyDP(cn, max(1.0, px / 2), True) for cn in cnts]
        cv2.fillPoly(out, poly, int(c))
    return out


def build_samples(ds, ids, supervision, labeled_fraction, no_unlabeled, seed, tag_config=None):
    """Training :class:`Sample` list for ``ids`` under ``supervision`` (see the module doc);
    ``tag_config``: the :class:`segmenter.cam.TagConfig` of the tags pipeline (default: its defaults)."""
    from dataclasses import replace

    from segmenter.data import Sample

    rng = np.random.default_rng(seed)
    C = ds.num_classes
    parts = parse_supervision(supervision)
    order = rng.permutation(len(ids))
    n_lab = int(round(len(ids) * labeled_fraction))
    labeled = set(order[:n_lab].tolist())
    # assign supervision kinds among the labeled images, in a second seeded order
    kinds: list[tuple[str, str | None] | None] = [None] * len(ids)
    lab_list = [i for i in order if i in labeled]
    start = 0
    for k, (name, arg, frac) in enumerate(parts):
        n = len(lab_list) - start if (k == len(parts) - 1 and len(parts) == 1) else int(round(len(lab_list) * frac))
        for i in lab_list[start:start + n]:
            kinds[i] = (name, arg)
        start += n
    missing = sorted({arg for name, arg, _ in parts if name == "scribbles"} - set(ds.scribble_sets()))
    if missing:
        raise UsageError(f"{ds.name}: no scribble set {', '.join(repr(m) for m in missing)} (known: "
                         f"{', '.join(ds.scribble_sets()) or 'none'}, or simulated[:SEED]).")
    samples, tag_jobs, maskless = [], [], []
    for i, iid in enumerate(ids):
        kind = kinds[i]
        if kind is not None and kind[0] not in ("unlabeled", "scribbles") and not ds.has_mask(iid):
            maskless.append(iid)  # nothing to make its labels from: it trains as an unlabeled image
            kind = None
        if kind is None or kind[0] == "unlabeled":
            if no_unlabeled:
                continue
            samples.append(Sample(ds.image(iid), name=iid))
            continue
        name, arg = kind
        if name == "scribbles":
            img = ds.image(iid)
            samples.append(Sample(img, name=iid, scribbles=ds.scribbles(arg, iid, shape=img.shape[:2])))
            continue
        img, gt = ds.image_and_mask(iid)
        if name == "full":
            samples.append(Sample(img, name=iid, mask=gt, mask_kind="full"))
        elif name == "simulated":
            from segmenter.simulate import SimulationConfig, simulate_scribbles

            cfg = SimulationConfig(seed=int(arg or 0) * 100003 + _stable(iid))
            samples.append(Sample(img, name=iid, scribbles=simulate_scribbles(gt, C, replace(cfg))))
        elif name == "coarse":
            px = int(arg or 4)
            samples.append(Sample(img, name=iid, mask=coarse_mask(gt, px, seed + _stable(iid)), mask_kind="coarse"))
        elif name == "tags":
            present = np.zeros(C, bool)
            present[np.unique(gt[gt != 255])] = True
            tags = {c: ("present" if present[c] else "absent") for c in range(C)}
            samples.append(Sample(img, name=iid, tags=tags))
            tag_jobs.append(len(samples) - 1)
    if maskless:
        import sys

        from annotations.importer import name_list

        print(f"note: {len(maskless)} training image(s) have no mask in masks/ to make their "
              f"{supervision} labels from, so they train as unlabeled images"
              f"{'' if not no_unlabeled else ' (left out: --no-unlabeled)'}: {name_list(maskless, 5)}", file=sys.stderr)
    if tag_jobs:
        _add_cam_pseudo_masks(samples, tag_jobs, C, tag_config)
    return samples


def _add_cam_pseudo_masks(samples, jobs, C, tag_config=None):
    """Tags -> (mask, confidence) per image through :func:`segmenter.cam.tags_to_pseudo_masks`."""
    try:
        from segmenter.cam import tags_to_pseudo_masks
    except ImportError as e:
        raise UsageError(f"--supervision tags needs segmenter.cam.tags_to_pseudo_masks ({e}).") from None
    tags = np.full((len(jobs), C), -1, np.int8)
    for r, j in enumerate(jobs):
        for c, st in samples[j].tags.items():
            tags[r, c] = 1 if st == "present" else 0
    out = tags_to_pseudo_masks([samples[j].image for j in jobs], tags, C, tag_config)
    for j, (mask, conf) in zip(jobs, out):
        samples[j].mask, samples[j].mask_kind, samples[j].confidence = mask, "pseudo", conf


class BareLoop:
    """A plain smp training loop: same model, batch and size, AdamW, cross-entropy on random
    labels, inputs already on the device. :meth:`run` times ``n`` steps; calling it between the
    trainer's epochs (see :class:`InterleavedBare`) measures both loops under the same CPU load."""

    def __init__(self, model_cfg, batch_size: int, device: str, seed: int, warmup: int = 2):
        import torch

        from segmenter.models import create_model

        g = torch.Generator().manual_seed(seed)
        self.torch = torch
        self.device = device
        self.model = create_model(model_cfg).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        S, C = model_cfg.size, model_cfg.num_classes
        self.x = torch.randn(batch_size, model_cfg.in_channels, S, S, generator=g).to(device)
        self.y = torch.randint(0, C, (batch_size, S, S), generator=g).to(device)
        self.amp = device.startswith("cuda")
        self.images = 0
        self.seconds = 0.0
        self._steps(warmup)

    def _steps(self, n: int) -> None:
        import torch.nn.functional as F

        torch = self.torch
        for _ in range(n):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                out = self.model(self.x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits.float(), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss.item()

    def run(self, n: int) -> None:
        if self.amp:
            self.torch.cuda.synchronize()
        t0 = time.perf_counter()
        self._steps(n)
        if self.amp:
            self.torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.images += n * self.x.shape[0]

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def _interleaved(bare: BareLoop, steps_per_epoch: int):
    from segmenter.train import TrainCallback

    class InterleavedBare(TrainCallback):
        """Runs bare steps after each epoch (outside the trainer's timed steps)."""

        def on_epoch_end(self, p, metrics):
            bare.run(steps_per_epoch)

    return InterleavedBare()


#: Bytes of decoded test images and masks :func:`read_test_pairs` keeps for the scoring (they stay in
#: memory through the training); the images past it are read again when scored.
TEST_CACHE_BYTES = 512 << 20


def read_test_pairs(test_ds, test_ids: list[str]) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Read every test image and mask once (a mask of the wrong size or with a value that is no
    class stops the run here, before the training) and keep them, in order, for the scoring up to
    :data:`TEST_CACHE_BYTES`; the pairs past it are ``None`` (read again when scored)."""
    pairs, held = [], 0
    for i in test_ids:
        image, gt = test_ds.image_and_mask(i)
        held += image.nbytes + gt.nbytes
        pairs.append((image, gt) if held <= TEST_CACHE_BYTES else None)
    return pairs


def run(args) -> int:
    from annotations.folder import FolderDataset

    report = run_benchmark(args, FolderDataset)
    from segmenter.benchmarks import write_report

    write_report(report, args.out)
    print(format_table(report))
    return 0


def run_benchmark(args, FolderDataset) -> dict:
    from segmenter.benchmarks import note_unseen_classes, split_ids
    from segmenter.data import TrainSet
    from segmenter.metrics import MeanIoU
    from segmenter.models import ModelConfig
    from segmenter.predict import Predictor
    from segmenter.train import ProgressBar, TrainConfig, Trainer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not 0 < args.labeled_fraction <= 1:
        raise UsageError(f"--labeled-fraction must be in (0, 1], got {args.labeled_fraction}")
    parts = parse_supervision(args.supervision)  # validate before loading anything
    overrides = {k: v for k, v in (("rounds", args.rounds), ("crf_weight", args.crf_weight),
                                   ("semi", args.semi), ("propagate", args.propagate),
                                   ("refine", args.refine), ("refine_prior_weight", args.refine_prior_weight),
                                   ("refine_after", args.refine_after))
                 if v is not None}
    # made (and so validated, the encoder weights file included) before any label is built
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       device=args.device, encoder_weights=args.encoder_weights, **overrides)
    if args.save_model and args.out:
        from pathlib import Path

        from segmenter.models import checkpoint_paths

        if Path(args.out).resolve() in [q.resolve() for q in checkpoint_paths(args.save_model)]:
            raise UsageError("--save-model and --out name the same file; give the model another name")
    ds = FolderDataset.open(args.data)
    test_ds = FolderDataset.open(args.test_data) if args.test_data else ds
    if test_ds.classes != ds.classes:
        raise UsageError(f"the test data's classes {test_ds.classes} differ from the training data's {ds.classes}")
    ids = split_ids(ds, args.train_split)
    if args.limit_train and args.limit_train < len(ids):
        pick = np.sort(np.random.default_rng(args.seed).choice(len(ids), args.limit_train, replace=False))
        ids = [ids[i] for i in pick]
    test_ids = split_ids(test_ds, args.test_split, with_mask=True)
    if args.limit_test:
        test_ids = test_ids[:args.limit_test]
    if not ids:
        raise UsageError(f"{ds.name}: the training split {args.train_split or '(all)'} has no images")
    if not test_ids:
        raise UsageError(f"{test_ds.name}: the test split {args.test_split or '(all)'} has no image with a mask")
    test_pairs = read_test_pairs(test_ds, test_ids)  # a bad test mask is found now, not after the training

    t0 = time.perf_counter()
    tag_config = None
    if any(name == "tags" for name, _, _ in parts):
        from segmenter.cam import TagConfig

        tag_config = TagConfig(encoder=args.encoder, encoder_weights=args.encoder_weights)
    samples = build_samples(ds, ids, args.supervision, args.labeled_fraction, args.no_unlabeled, args.seed,
                            tag_config)
    label_seconds = time.perf_counter() - t0
    mcfg = ModelConfig(classes=ds.classes, arch=args.arch, encoder=args.encoder, size=args.size)
    t0 = time.perf_counter()
    data = TrainSet.build(samples, ds.num_classes, args.size, mcfg.in_channels)
    prepare_seconds = time.perf_counter() - t0
    del samples
    bare = BareLoop(mcfg, tcfg.batch_size, tcfg.device, args.seed)
    trainer = Trainer(data, mcfg, tcfg, callbacks=[ProgressBar(), _interleaved(bare, args.bare_steps)])
    res = trainer.fit()
    if args.save_model:
        from segmenter.models import save_checkpoint

        save_checkpoint(args.save_model, trainer.model, mcfg)

    t0 = time.perf_counter()
    pred = Predictor(trainer.model, mcfg, device=tcfg.device, tta=args.tta, batch_size=32)
    metric = MeanIoU(ds.num_classes)
    for s in range(0, len(test_ids), 64):
        pairs = [test_pairs[k] or test_ds.image_and_mask(test_ids[k]) for k in range(s, min(s + 64, len(test_ids)))]
        test_pairs[s:s + 64] = [None] * len(pairs)  # scored: let them go
        for (_, gt), p in zip(pairs, pred.predict([im for im, _ in pairs])):
            metric.add(p.mask, gt)
    test_seconds = time.perf_counter() - t0
    note_unseen_classes(metric, test_ds.classes, f"{test_ds.name} test split")

    bare_ips = bare.images_per_s
    train_seconds = res.train_seconds - bare.seconds + prepare_seconds  # the interleaved bare steps excluded
    return {
        "task": "train", "supervision": args.supervision, "dataset": ds.name,
        "n_train": len(data), "n_test": len(test_ids),
        "test_miou": metric.miou, "test_miou_dataset": metric.miou_dataset, "test_dice": metric.dice,
        "train_seconds": train_seconds, "images_per_s": res.images_per_s, "bare_images_per_s": bare_ips,
        "images_per_s_ratio": res.images_per_s / bare_ips if bare_ips else None, "bare_steps": bare.images // tcfg.batch_size,
        "images_per_s_overall": res.images_seen / train_seconds if train_seconds else None,
        "epochs": args.epochs, "size": args.size, "arch": args.arch, "encoder": args.encoder,
        "device": tcfg.device, "seed": args.seed, "threads": args.threads or None, "batch_size": tcfg.batch_size,
        "labeled_fraction": args.labeled_fraction, "unlabeled_used": not args.no_unlabeled,
        "train_split": args.train_split, "test_split": args.test_split, "counts": data.counts(),
        "loop_seconds": res.loop_seconds, "refine_seconds": res.refine_seconds,
        "prepare_seconds": prepare_seconds, "label_seconds": label_seconds, "test_seconds": test_seconds,
        "rounds_changed": res.rounds, "refine_at": res.refine_at, "steps": res.steps,
        "per_class_iou": metric.per_class_iou(),
        "train_config": {k: v for k, v in vars(tcfg).items() if k not in ("checkpoint", "resume")},
    }


def format_table(r: dict) -> str:
    return "\n".join([
        f"{r['dataset']} / {r['supervision']}: {r['n_train']} train, {r['n_test']} test, "
        f"{r['epochs']} epochs at {r['size']} px, {r['arch']}/{r['encoder']} on {r['device']}",
        f"{'test_miou':>10}{'miou_ds':>9}{'dice':>8}{'train_s':>9}{'img/s':>8}{'bare':>8}{'ratio':>7}",
        f"{r['test_miou']:>10.3f}{r['test_miou_dataset']:>9.3f}{r['test_dice']:>8.3f}{r['train_seconds']:>9.1f}"
        f"{r['images_per_s']:>8.2f}{r['bare_images_per_s']:>8.2f}{(r['images_per_s_ratio'] or 0):>7.2f}",
    ])
