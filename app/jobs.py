"""Background jobs of the app (training, prediction): one thread per project, polled by the page.

A :class:`Job` runs ``target(job)`` in a thread; the target reports progress with
:meth:`Job.report` and checks ``job.cancel`` (a ``threading.Event``). The page polls
:meth:`Job.snapshot` with a ``gr.Timer`` and draws :func:`progress_html`. No gradio here.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from annotations.errors import AnnotationError

log = logging.getLogger("weakseg.app")


@dataclass
class JobState:
    """What the page shows. ``fraction`` in [0, 1]; ``losses``: ``[(global_step, loss)]``."""

    kind: str = ""
    status: str = "idle"      # idle | running | done | failed | cancelled
    fraction: float = 0.0
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    losses: list = field(default_factory=list)
    eta_s: float | None = None
    val_miou: float | None = None
    message: str = ""
    started: float = 0.0
    finished: float = 0.0


class Job:
    def __init__(self, kind: str, target: Callable[["Job"], str]):
        self.kind = kind
        self.target = target
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._state = JobState(kind=kind, status="running", started=time.time(), message=f"{kind}: starting…")
        self.thread = threading.Thread(target=self._run, name=f"weakseg-{kind}", daemon=True)

    def start(self) -> "Job":
        self.thread.start()
        return self

    def report(self, **fields) -> None:
        with self._lock:
            for k, v in fields.items():
                if k == "loss_point":
                    self._state.losses.append(v)
                    if len(self._state.losses) > 2000:
                        self._state.losses = self._state.losses[::2]
                else:
                    setattr(self._state, k, v)

    def snapshot(self) -> dict:
        with self._lock:
            d = asdict(self._state)
        d["elapsed_s"] = (d["finished"] or time.time()) - d["started"] if d["started"] else 0.0
        return d

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        try:
            msg = self.target(self)
            status = "cancelled" if self.cancel.is_set() else "done"
            self.report(status=status, message=msg or status, fraction=1.0 if status == "done" else self._state.fraction)
        except AnnotationError as e:
            status = "cancelled" if self.cancel.is_set() else "failed"
            self.report(status=status, message=str(e))
        except Exception as e:  # noqa: BLE001 - shown to the person, logged with the trace
            log.exception("%s job failed", self.kind)
            self.report(status="failed", message=f"{self.kind} failed: {type(e).__name__}: {e}")
        finally:
            self.report(finished=time.time())


_JOBS: dict[str, Job] = {}
_JOBS_LOCK = threading.Lock()


def start_job(key: str, kind: str, target: Callable[[Job], str]) -> Job:
    """Start ``target`` for the project ``key`` unless a job already runs there."""
    with _JOBS_LOCK:
        cur = _JOBS.get(key)
        if cur is not None and cur.running:
            raise AnnotationError(f"a {cur.kind} job is already running on this project; wait or cancel it.")
        job = Job(kind, target)
        _JOBS[key] = job
        return job.start()


def current_job(key: str) -> Job | None:
    return _JOBS.get(key)


def refuse_while_running(key: str, refused: str) -> None:
    """Raise :class:`AnnotationError` (``refused``, e.g. "The image was not removed", and why) when
    a job runs on the project ``key``."""
    cur = _JOBS.get(key)
    if cur is not None and cur.running:
        raise AnnotationError(f"{refused}: a {cur.kind} job is running on this project and reads its images and "
                              "classes. Wait until it ends (or cancel it in the Train & predict panel), then try "
                              "again.")


@contextmanager
def while_idle(key: str, refused: str) -> Iterator[None]:
    """Run the block with no job running on the project ``key`` and none starting meanwhile (a
    Train pressed in another window waits for the block); refused as
    :func:`refuse_while_running` says when one runs."""
    with _JOBS_LOCK:
        refuse_while_running(key, refused)
        yield


def cancel_job(key: str) -> str:
    job = _JOBS.get(key)
    if job is None or not job.running:
        return "Nothing is running."
    job.cancel.set()
    job.report(message=f"{job.kind}: cancelling after the current step…")
    return "Cancelling…"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "–"
    s = max(0, int(round(s)))
    return f"{s // 60}:{s % 60:02d}"


def _sparkline(points: list, width: int = 300, height: int = 64) -> str:
    if len(points) < 2:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    sx = (width - 4) / max(x1 - x0, 1e-9)
    sy = (height - 14) / max(y1 - y0, 1e-9)
    pts = " ".join(f"{2 + (x - x0) * sx:.1f},{height - 4 - (y - y0) * sy:.1f}" for x, y in points)
    return (f"<svg viewBox='0 0 {width} {height}' preserveAspectRatio='none' aria-label='training loss'>"
            f"<polyline fill='none' stroke='currentColor' stroke-width='1.5' points='{pts}'/>"
            f"<text x='4' y='10' font-size='10' fill='currentColor'>loss {ys[0]:.3f} → {ys[-1]:.3f}</text></svg>")


def progress_html(snap: dict | None, idle: str | None = None) -> str:
    """The progress bar, the figures and the loss curve of a job snapshot, as HTML; with no
    snapshot, an empty bar and ``idle`` (e.g. the model Predict will use)."""
    if not snap:
        return ("<div class='ws-pbar' data-status='idle'><div style='width:0%'></div></div>"
                f"<div class='ws-pinfo'>{html.escape(idle or 'Not trained yet in this session.')}</div>")
    pct = 100.0 * max(0.0, min(1.0, snap.get("fraction") or 0.0))
    st = snap.get("status", "")
    parts = [f"<b>{html.escape(snap.get('kind', ''))}</b> {html.escape(st)} · {pct:.0f} %"]
    if snap.get("epochs"):
        parts.append(f"epoch {snap['epoch']}/{snap['epochs']}")
    if snap.get("steps"):
        parts.append(f"step {snap['step']}/{snap['steps']}")
    if snap.get("loss") is not None:
        parts.append(f"loss {snap['loss']:.4f}")
    if st == "running":
        parts.append(f"ETA {_fmt_s(snap.get('eta_s'))}")
    parts.append(f"elapsed {_fmt_s(snap.get('elapsed_s'))}")
    if snap.get("val_miou") is not None:
        parts.append(f"<b>validation mIoU {snap['val_miou']:.3f}</b>")
    msg = html.escape(snap.get("message") or "")
    return (f"<div class='ws-pbar' role='progressbar' aria-valuenow='{pct:.0f}' aria-valuemin='0' "
            f"aria-valuemax='100' data-status='{html.escape(st)}'><div style='width:{pct:.1f}%'></div></div>"
            f"<div class='ws-pinfo'>{' · '.join(parts)}</div>"
            f"<div class='ws-pinfo'>{msg}</div>{_sparkline(snap.get('losses') or [])}")
