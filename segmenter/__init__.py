"""The engine: scribbles and tags to pseudo-masks, weak-supervision training, prediction.

Imports point one way: ``app -> segmenter -> annotations``. Nothing here imports gradio.
"""
__version__ = "0.1.0"
