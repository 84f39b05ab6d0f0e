"""Helpers shared by the commands that read one scribble layer (``--layer``)."""
from __future__ import annotations


def other_layers_hint(project, layer: str) -> str:
    """A sentence naming the project's scribble layers when ``layer`` has none of them (an import
    puts a dataset's scribble set in a layer of its own name), else ``""``."""
    alt = project.fallback_layer(layer)
    if alt is None:
        return ""
    return (f" Scribble layer '{layer}' is empty; this project's strokes are in layer "
            f"{', '.join(repr(x) for x in project.scribble_layers())}: add --layer {alt}.")
