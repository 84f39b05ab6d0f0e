"""``python -m segmenter train PROJECT``: train a model on everything the project's images carry.

Full masks (``final``/``imported``), scribbles, pseudo-masks, tags and unlabeled images are all
used in one run (see :mod:`segmenter.train`). The checkpoint goes to ``PROJECT/models/NAME``
(``.safetensors`` + ``.json``), rewritten after every epoch. Several processes/GPUs::

    torchrun --nproc_per_node 2 -m segmenter train PROJECT --device cuda
"""
from __future__ import annotations

import os
import sys
import time


#: The model options' defaults: a resumed run keeps the checkpoint's, and refuses others given.
MODEL_DEFAULTS = {"arch": "unet", "encoder": "resnet18", "size": 128, "channels": 3}
#: Training options a resumed run takes from the checkpoint's run unless given (argument -> default).
TRAIN_DEFAULTS = {"batch_size": 8, "lr": 1e-3, "seed": 0, "rounds": 3, "semi": "self_training",
                  "propagate": "hybrid", "refine": "auto"}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a segmentation model from the project's labels",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("project", help="project folder")
    p.add_argument("--name", default=None, help="model name (default: ARCH-ENCODER-TIME)")
    p.add_argument("--arch", default=MODEL_DEFAULTS["arch"],
                   help="smp architecture (unet, unetplusplus, fpn, deeplabv3plus, ...)")
    p.add_argument("--encoder", default=MODEL_DEFAULTS["encoder"],
                   help="smp encoder (resnet18, mobilenet_v2, efficientnet-b0, ...)")
    p.add_argument("--encoder-weights", default=None, help="local .safetensors file of pretrained encoder weights")
    p.add_argument("--size", type=int, default=MODEL_DEFAULTS["size"], help="input side in pixels (multiple of 32)")
    p.add_argument("--channels", type=int, default=MODEL_DEFAULTS["channels"], choices=(1, 3),
                   help="images are converted to this many channels")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=TRAIN_DEFAULTS["lr"])
    p.add_argument("--seed", type=int, default=TRAIN_DEFAULTS["seed"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    p.add_argument("--rounds", type=int, default=TRAIN_DEFAULTS["rounds"], help="training rounds with pseudo-mask refinement between them")
    p.add_argument("--propagate", default=TRAIN_DEFAULTS["propagate"],
                   help="pseudo-labelling method (segmenter.pseudo) that turns scribbles into pseudo-masks before "
                        "training; none = train on the strokes alone")
    p.add_argument("--refine", default=TRAIN_DEFAULTS["refine"], choices=("auto", "pseudo", "crf"),
                   help="refinement between rounds: rerun the propagate method with the model (and the previous "
                        "pseudo-mask) as prior, or a CRF step; auto = pseudo unless --propagate none")
    p.add_argument("--semi", default=TRAIN_DEFAULTS["semi"],
                   help="semi-supervised term for unlabeled images: self_training (teacher pseudo-labels at every "
                        "refinement point) | mean_teacher (teacher every step, slower) | none")
    p.add_argument("--no-unlabeled", action="store_true", help="do not train on unlabeled images")
    p.add_argument("--no-pseudo", action="store_true", help="ignore stored pseudo-masks")
    p.add_argument("--imported-as", default="full", choices=("full", "coarse"),
                   help="treat imported masks as exact (full) or as coarse, noisy labels")
    p.add_argument("--layer", default="default", help="scribble layer to train on")
    p.add_argument("--image-set", default=None, help="train on this image set only")
    p.add_argument("--resume", default=None,
                   help="continue a checkpoint (name or path; 'latest' = newest), in place, or into a new model "
                        "with --name (the checkpoint is then kept); its --arch, --encoder, --size and --channels "
                        "are kept")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def check_model_name(project, name: str) -> None:
    """Refuse a ``--name`` that is not a plain file name inside ``models/`` or that a model already has."""
    from segmenter.cli import UsageError

    if not name.strip() or name.startswith(".") or any(c in name for c in '/\\:\0'):
        raise UsageError(f"--name must be a plain file name (no '/', '\\', ':' or leading '.'), got {name!r}.")
    if (project.models_dir / f"{name}.safetensors").exists():
        raise UsageError(f"a model named '{name}' exists already: choose another --name, or continue it with "
                         f"--resume {name}.")


def cmd_train(args) -> int:
    from annotations.store import Project
    from segmenter.data import ProjectSamples, TrainSet
    from segmenter.errors import NoLabelsError
    from segmenter.models import ModelConfig, latest_checkpoint
    from segmenter.predict import resolve_model
    from segmenter.train import ProgressBar, TrainConfig, Trainer

    from ._layers import note_other_layers, other_layers_hint

    project = Project.open(args.project)
    ids = project.image_set(args.image_set) if args.image_set else None
    samples = ProjectSamples(project, ids, layer=args.layer, imported_as=args.imported_as,
                             use_pseudo=not args.no_pseudo, include_unlabeled=not args.no_unlabeled)
    resume = None
    if args.resume:
        resume = latest_checkpoint(project.models_dir) if args.resume == "latest" else resolve_model(project, args.resume)
        if resume is None:
            from segmenter.errors import CheckpointError

            raise CheckpointError(f"no checkpoint to resume in {project.models_dir}.")
        name = resume.with_suffix("").name
        if args.name and args.name != name:  # continue into a new model: the checkpoint stays as it is
            name = args.name
            check_model_name(project, name)
    else:
        name = args.name or f"{args.arch}-{args.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_model_name(project, name)
    mcfg = ModelConfig(classes=project.class_names, arch=args.arch, encoder=args.encoder, size=args.size,
                       in_channels=args.channels)
    if resume is not None:
        from segmenter.cli import UsageError
        from segmenter.models import read_config

        doc = read_config(resume)
        done = int((doc.get("state") or {}).get("epoch", 0))
        if done >= args.epochs:  # --epochs counts the checkpoint's epochs too: nothing would be trained
            have = f"{done} of {args.epochs} epochs" if done == args.epochs else \
                f"{done} epochs, more than --epochs {args.epochs}"
            raise UsageError(f"checkpoint '{resume.with_suffix('').name}' already has {have}: nothing to train. --epochs counts all its "
                             f"epochs; raise it above {done} (e.g. --epochs {done + max(1, args.epochs)}) to train "
                             "further.")
        mcfg = ModelConfig.from_json(doc["config"])
        mcfg.classes = project.class_names  # a mismatch is refused when the checkpoint loads
        own = {"arch": mcfg.arch, "encoder": mcfg.encoder, "size": mcfg.size, "channels": mcfg.in_channels}
        other = [k for k, v in own.items() if getattr(args, k) != MODEL_DEFAULTS[k] and getattr(args, k) != v]
        if other:  # they were silently replaced by the checkpoint's
            given = ", ".join(f"--{k} {getattr(args, k)}" for k in other)
            has = ", ".join(f"{k} {own[k]}" for k in other)
            raise UsageError(f"{given}: the checkpoint '{resume.with_suffix('').name}' has {has}, and a resumed "
                             "run keeps its model; leave those options out, or train a new model (without "
                             "--resume) to change them.")
        kept = resumed_settings(args, (doc.get("state") or {}).get("train_config") or {})
        if kept and os.environ.get("RANK", "0") == "0":
            print(f"note: continuing with the checkpoint's {kept} (give an option to change it).", file=sys.stderr)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
                       amp=not args.no_amp, rounds=args.rounds, semi=args.semi,
                       propagate=args.propagate, refine=args.refine, checkpoint=str(project.models_dir / name), resume=str(resume) if resume else None,
                       encoder_weights=args.encoder_weights, background=project.background_index)
    # images whose file is gone from the project folder or damaged are left out of the run (ProjectSamples)
    gone = (project.files_note(samples.missing, "left out of training",
                               why="is gone from the project folder or can no longer be read")
            if samples.missing else "")
    try:
        data = TrainSet.build(samples, project.num_classes, mcfg.size, mcfg.in_channels)
    except NoLabelsError as e:
        raise NoLabelsError(str(e) + other_layers_hint(project, args.layer) + (f" ({gone})" if gone else "")) from None
    if gone and os.environ.get("RANK", "0") == "0":  # once per run under torchrun
        print(f"note: {gone}", file=sys.stderr)
    note_other_layers(project, args.layer)  # other labels carry the run; say whose strokes it leaves out
    from segmenter.models import trainings_note

    others = trainings_note(project.models_dir)
    if others and os.environ.get("RANK", "0") == "0":
        print(f"note: {others}", file=sys.stderr)
    project.close() if hasattr(project, "close") else None
    callbacks = [] if args.quiet else [ProgressBar()]
    trainer = Trainer(data, mcfg, tcfg, callbacks=callbacks)
    res = trainer.fit()
    if not trainer.dist.is_main:  # under torchrun the first process reports for the run
        return 1 if res.stopped else 0
    if res.stopped:
        print(res.message)
        return 1
    ran = res.epochs_done - (done if resume is not None else 0)
    epochs = f"{res.epochs_done} epochs" + (f", {ran} in this run" if resume is not None else "")
    print(f"model {res.checkpoint} ({epochs}, {res.train_seconds:.0f} s, {res.images_per_s:.1f} images/s)")
    short = rounds_note(tcfg.rounds, tcfg.epochs, res.refine_at, len(trainer._weak()))
    if short:
        print(short, file=sys.stderr)
    return 0


def resumed_settings(args, before: dict) -> str:
    """Set on ``args`` the training options (:data:`TRAIN_DEFAULTS`) left at their defaults to the
    values of the checkpoint's run (``before``: its stored ``train_config``), so that a resumed run
    goes on as it started; returns them as options (``"--rounds 5, --lr 0.0005"``), ``""`` if none."""
    kept = []
    for k, default in TRAIN_DEFAULTS.items():
        was = before.get(k)
        if was is None or getattr(args, k) != default or was == default:
            continue
        try:
            was = type(default)(was)
        except (TypeError, ValueError):
            continue
        setattr(args, k, was)
        kept.append(f"--{k.replace('_', '-')} {was}")
    return ", ".join(kept)


def rounds_note(rounds: int, epochs: int, refine_at: list, n_weak: int) -> str:
    """A note when ``--rounds`` asked for more refinements than ``epochs`` left room for (a
    refinement comes after an epoch, before the last one, and not two after the same epoch), for
    a run with weakly labelled images (else nothing is refined anyway); ``""`` otherwise."""
    want = rounds - 1
    if rounds < 2 or not n_weak or len(refine_at) >= want:
        return ""
    got = len(refine_at)
    return (f"note: {rounds} rounds (--rounds) ask for {want} refinements of the pseudo-masks, but {epochs} epoch(s) left "
            f"room for {got or 'none'}" + (f" (after epoch {', '.join(map(str, refine_at))})" if got else "")
            + "; train more epochs for all of them.")
