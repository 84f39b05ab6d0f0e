"""One module per ``python -m segmenter`` sub-command; each exposes ``register(subparsers)``."""
