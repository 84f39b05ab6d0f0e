"""``python -m segmenter models PROJECT``: list, slim and delete a project's trained models.

Every training run (``train``, the app's Train) leaves a model in ``PROJECT/models/``: the weights
with the optimiser state and the EMA teacher, so that ``train --resume`` goes on exactly where it
stopped (about 230 MB at ResNet-18, four times the weights alone). This lists them (the one
``predict`` and the app use marked ``*``: the newest made for the project's classes as they are),
and frees the space: ``--slim`` drops the optimiser and the teacher (the model predicts as before,
under the same version; a resume then starts the optimiser afresh), ``--delete`` removes models,
``--keep N`` removes all but the N newest (never the one marked ``*``). Names are checked before
anything is removed.

    python -m segmenter models myproj
    python -m segmenter models myproj --slim                  # every model
    python -m segmenter models myproj --slim app-unet-resnet18-20261202-211916
    python -m segmenter models myproj --delete cli-m1 old-run
    python -m segmenter models myproj --keep 2
"""
from __future__ import annotations

import argparse

from annotations.importer import name_list


def register(sub) -> None:
    parts = __doc__.split("\n\n")
    p = sub.add_parser("models", help="list, slim (drop the optimiser state) or delete a project's trained models",
                       description=parts[0] + "\n\n" + parts[1], epilog="examples:\n" + __doc__.rstrip().split("\n\n")[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", metavar="PROJECT", help="project folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--slim", nargs="*", metavar="NAME", default=None,
                   help="drop the optimiser state and EMA teacher of these models (none named: every model)")
    g.add_argument("--delete", nargs="+", metavar="NAME", help="remove these models (both files)")
    g.add_argument("--keep", type=int, metavar="N", help="remove all but the N newest models (the one in use stays)")
    p.set_defaults(func=cmd_models)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _named(entries, names: list[str]):
    """The entries ``names`` pick (a name, or a file name of one); an unknown name is an error
    naming the models there are."""
    from segmenter.cli import UsageError

    by = {e.name: e for e in entries}
    out, unknown = [], []
    for n in names:
        key = n.strip()
        for suffix in (".safetensors", ".json"):
            key = key[: -len(suffix)] if key.endswith(suffix) else key
        key = key.replace("\\", "/").rsplit("/", 1)[-1]
        if key in by:
            if by[key] not in out:
                out.append(by[key])
        else:
            unknown.append(n)
    if unknown:
        raise UsageError(f"no model {name_list([repr(u) for u in unknown], 5)} in the project; it has: "
                         f"{name_list([e.name for e in entries], 10) or 'none'}.")
    return out


def cmd_models(args) -> int:
    from annotations.store import Project
    from segmenter.cli import UsageError
    from segmenter.errors import CheckpointError, SegmenterError
    from segmenter.models import delete_model, list_models, slim_checkpoint, training_text, trainings_running
    from segmenter.predict import resolve_model

    project = Project.open(args.project)
    folder = project.models_dir
    entries = list_models(folder)
    fitting = [e for e in entries if not e.error and e.classes == project.class_names]
    try:
        used = resolve_model(project, None)
    except SegmenterError:
        used = None
    # the model predict and the app use: the newest made for the classes as they are (none fits: none)
    in_use = next((e for e in fitting if e.weights == used), None)
    if args.keep is not None and args.keep < 0:
        raise UsageError(f"--keep must be a whole number >= 0, not {args.keep}.")
    if not entries:
        if args.delete:
            _named(entries, args.delete)  # names what is (not) there
        print(f"no trained model in {folder}; 'train' makes one.")
        return 0

    training = {r["model"]: r for r in trainings_running(folder)}

    def not_training(chosen, what: str) -> None:
        busy = [e.name for e in chosen if e.name in training]
        if busy:
            r = training[busy[0]]
            raise UsageError(f"model {busy[0]} is being trained ({training_text(r)}): nothing was {what}; "
                             "run this again once that training ends.")

    if args.slim is not None:
        chosen = _named(entries, args.slim) if args.slim else [e for e in entries if not e.error]
        if args.slim:
            not_training(chosen, "slimmed")
            bad = next((e for e in chosen if e.error), None)
            if bad is not None:  # every name is checked before anything is changed
                raise UsageError(f"model {bad.name}: {bad.error}; nothing was slimmed (delete it with --delete "
                                 f"{bad.name}).")
        chosen = [e for e in chosen if e.name not in training]  # every model: the ones in training wait
        saved, done, failed, bare = 0, 0, [], 0
        for e in chosen:
            try:
                n = slim_checkpoint(e.weights)
            except CheckpointError as err:
                failed.append(f"{e.name} ({' '.join(str(err).split())})")
                continue
            saved += n
            done += n > 0
            bare += n == 0
        print(f"slimmed {done} model(s), {_mb(saved)} freed" +
              (f"; {bare} had no optimiser state to drop" if bare else "") +
              ("; 'train --resume' from a slimmed model starts the optimiser afresh" if done else "") + "." +
              (f" Left as they are, unreadable: {'; '.join(failed)}." if failed else ""))
        return 2 if failed else 0

    if args.delete or args.keep is not None:
        if args.delete:
            chosen = _named(entries, args.delete)
        else:  # the N newest usable models stay; files that are no model are not this command's to remove
            usable = [e for e in entries if not e.error]
            newest = usable[max(0, len(usable) - args.keep):] if args.keep else []
            chosen = [e for e in usable if e not in newest and e is not in_use]
        if args.delete:
            not_training(chosen, "deleted")
        chosen = [e for e in chosen if e.name not in training]  # --keep spares a model being trained
        freed = sum(delete_model(e.weights) for e in chosen)
        rest = len(entries) - len(chosen)
        note = ""
        if in_use is not None and in_use in chosen:
            nxt = [e for e in fitting if e not in chosen]
            note = (f"; predict now uses {nxt[-1].name}" if nxt else
                    "; no model is left for the project's classes: 'train' makes one")
        print(f"deleted {len(chosen)} model(s){': ' + name_list([e.name for e in chosen], 5) if chosen else ''}, "
              f"{_mb(freed)} freed; {rest} left{note}.")
        return 0

    total = sum(e.bytes for e in entries)
    print(f"{len(entries)} model(s) in {folder}, {_mb(total)} ('*': the one predict and the app use; "
          "'resumable': optimiser state kept, --slim drops it):")
    width = max(len(e.name) for e in entries)
    for e in entries:
        mark = "*" if e is in_use else " "
        if e.name in training:
            print(f"{mark} {e.name:<{width}}  {_mb(e.bytes):>9}  being trained ({training_text(training[e.name])})")
            continue
        if e.error:
            print(f"{mark} {e.name:<{width}}  {_mb(e.bytes):>9}  unusable: {e.error}")
            continue
        fits = "" if e.classes == project.class_names else f"  other classes: {', '.join(e.classes)}"
        print(f"{mark} {e.name:<{width}}  {_mb(e.bytes):>9}  {e.arch}/{e.encoder} {e.size} px, "
              f"{e.epochs} epoch(s), saved {e.saved or '?'}{', resumable' if e.resumable else ''}{fits}")
    return 0
