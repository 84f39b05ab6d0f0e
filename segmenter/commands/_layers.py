"""Helpers shared by the commands: the scribble layer they read (``--layer``), the images they name
(``--images``)."""
from __future__ import annotations


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
