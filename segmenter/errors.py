"""Errors of the segmentation engine, written for people (no stack traces reach a user)."""
from annotations.errors import AnnotationError


class SegmenterError(AnnotationError):
    """Something the user asked the engine cannot do; the message says why and what to do."""


class NoLabelsError(SegmenterError):
    """There is nothing to learn from: no scribbles, tags or masks where they are needed."""


class DegenerateMasksError(SegmenterError):
    """The masks a run made carry no information (e.g. one class everywhere); nothing was saved."""


class CheckpointError(SegmenterError):
    """A checkpoint is missing, corrupt or made for other classes."""


class TrainingStopped(SegmenterError):
    """Training stopped early (cancelled, or a NaN loss); the last good checkpoint is kept."""
