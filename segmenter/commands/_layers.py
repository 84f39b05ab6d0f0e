"""Helpers shared by the commands: the scribble layer they read (``--layer``), the images they name
(``--images``)."""
from __future__ import annotations

import os
import sys


def resolve_image(project, key: str) -> int:
    """The id of the image ``key`` names: an image name (or its stem), else an image id. A name wins,
    so ``2`` is the image named ``2.png`` when there is one."""
    from annotations.errors import NotFoundError

    try:
        return project.image_by_name(key).id
    except NotFoundError:
        if key.isdigit():
            return project.image_info(int(key)).id
        raise


def other_layers_hint(project, layer: str) -> str:
    """A sentence naming the project's scribble layers when ``layer`` has none of them (an import
    puts a dataset's scribble set in a layer of its own name), else ``""``."""
    alt = project.fallback_layer(layer)
    if alt is None:
        return ""
    return (f" Scribble layer '{layer}' is empty; this project's strokes are in layer "
            f"{', '.join(repr(x) for x in project.scribble_layers())}: add --layer {alt}.")


def note_other_layers(project, layer: str, consequence: str = "") -> bool:
    """Print (to stderr, once per run: only the first process under torchrun) a ``note:`` naming
    the project's scribble layers when ``layer`` has none of their strokes, for a command whose
    other inputs carry it anyway (``train``, ``predict``). ``consequence`` says what the missing
    strokes mean for this command. Returns whether a note was due."""
    hint = other_layers_hint(project, layer)
    if hint and os.environ.get("RANK", "0") == "0":
        print("note:" + (f" {consequence}" if consequence else "") + hint, file=sys.stderr)
    return bool(hint)
