"""``python -m segmenter bench app``: the app under load: annotators saving strokes at once.

::

    python -m segmenter bench app [--data DIR] [--images M] [--annotators N] [--strokes K]
                                  [--pause S] [--undo-every U] [--no-preview] [--tabs T] [--size 512]
                                  [--out FILE]

The real app (the page :func:`app.ui.build_ui` builds, served by :func:`app.ui.launch` as
``app.py`` serves it) runs on a throw-away project of ``M`` images, and ``N`` simulated annotators
draw on them at the same time over HTTP, through the same server calls the page makes
(``canvas_save``, then ``canvas_preview`` with the strokes, as the page asks for the live preview
after every stroke). Annotator ``i`` works through the images in turn, starting at image ``i``, so
several of them edit the same image at once; each keeps its own copy of an image's strokes and the
version it last saw, as a page does, so every save after another annotator's is a merge. Every
``--undo-every``-th save is an undo of the annotator's own last stroke on that image, as the page
undoes: the stroke's pixels back to what they were, saved like a stroke. Strokes are short
horizontal lines on the rows ``y % N == i``: nobody draws over anybody else, so after the run every
pixel of every acknowledged save (unless the same annotator drew over it or undid it later) must be
in the store, read back from disk through a fresh handle. A save missing a pixel there is a
**lost write** (must be 0).

``--tabs T``: T more open pages (browser tabs) that only watch, as every open page does: each asks
the server every ``WATCH_SECONDS`` (2 s) whether a training job started, ended or saved a model
anywhere (the page's own timer event, posted as the page posts it), for as long as the annotators
draw. Their answers' latency is ``watch_p50_s`` / ``watch_p95_s`` (``watches`` of them); the saves'
and previews' latency beside them shows what the watching costs the people drawing.

Images: the first ``M`` of ``DIR`` (default ``../shared/datasets/grabcut`` beside the repository
if present, else synthetic discs), resized to ``--size`` px on the long side. Report keys:
``task: "app", annotators, images, saves, undos, p50_s, p95_s`` (save latency, request to answer),
``lost_writes``, ``errors`` (saves, and watching tabs' looks, answered with an error), ``preview_p50_s``, ``preview_p95_s``,
``saves_per_s``, ``wall_s``, ``size``, ``dataset``, ``tabs``, ``watches``, ``watch_p50_s``, ``watch_p95_s``.
"""
from __future__ import annotations

import contextlib
import io
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .latency import check_size, resize_sample, resolve_data, synthetic_samples

NONE = 255


def register(bsub) -> None:
    p = bsub.add_parser("app", help="the app under load: N annotators saving strokes at once (latency, lost writes)",
                        description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="dataset folder for the images (default: ../shared/datasets/grabcut, "
                                                "else synthetic)")
    p.add_argument("--images", type=int, default=4, help="images the annotators share (default 4)")
    p.add_argument("--annotators", type=int, default=8, help="simulated annotators at once (default 8)")
    p.add_argument("--strokes", type=int, default=20, help="strokes (saves) per annotator (default 20)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between an annotator's strokes (default 0.2)")
    p.add_argument("--no-preview", action="store_true", help="save only; no live-preview request after a stroke")
    p.add_argument("--undo-every", type=int, default=5,
                   help="every Nth save is an undo of the annotator's own last stroke on that image, as the "
                        "page does it (default 5; 0 = none)")
    p.add_argument("--tabs", type=int, default=0,
                   help="more open pages that only watch for training jobs, every 2 s as a page does (default 0)")
    p.add_argument("--size", type=int, default=512, help="long side of the images in pixels (default 512)")
    p.add_argument("--out", default=None, help="JSON report path")
    p.set_defaults(func=run)


@dataclass
class Annotator:
    """One simulated person: a page's worth of state (strokes and last seen version per image)."""

    index: int
    count: int
    shapes: dict
    rng: np.random.Generator
    docs: dict = field(default_factory=dict)         # image id -> [labels, version]
    acked: list = field(default_factory=list)        # (image id, rows, cols, class or values) acknowledged
    undo: dict = field(default_factory=dict)         # image id -> [(rows, cols, values before)] of own strokes
    undos: int = 0                                   # acknowledged undo saves
    save_s: list = field(default_factory=list)
    preview_s: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def stroke(self, image_id: int, num_classes: int):
        """A short horizontal line on one of this annotator's rows, in a random class."""
        h, w = self.shapes[image_id]
        rows = np.arange(self.index, h, self.count)
        y = int(self.rng.choice(rows))
        length = max(2, w // 8)
        x0 = int(self.rng.integers(0, max(1, w - length)))
        cols = np.arange(x0, min(w, x0 + length))
        return np.full(cols.size, y), cols, int(self.rng.integers(0, num_classes))


def lost_strokes(stored: dict, acked: list, shapes: dict) -> int:
    """How many acknowledged strokes ``(image id, rows, cols, class or per-pixel values)`` (in the
    order each annotator saved them, undos included; different annotators never share a pixel)
    miss a pixel in ``stored`` (image id -> scribble map or None). A pixel belongs to the last
    stroke over it: an annotator's own later stroke in another class is an overwrite, not a loss."""
    owner = {iid: np.full(shape, -1, np.int64) for iid, shape in shapes.items()}
    want = {iid: np.full(shape, NONE, np.uint8) for iid, shape in shapes.items()}
    for k, (image_id, rows, cols, cls) in enumerate(acked):
        owner[image_id][rows, cols] = k
        want[image_id][rows, cols] = cls
    lost = set()
    for image_id, own in owner.items():
        got = stored.get(image_id)
        got = np.full(own.shape, NONE, np.uint8) if got is None else got
        lost.update(np.unique(own[(own >= 0) & (got != want[image_id])]).tolist())
    return len(lost)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the tests start the app on one too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _annotate(a: Annotator, url: str, component: int, token: str, image_ids: list[int], num_classes: int,
              strokes: int, pause: float, preview: bool, undo_every: int, start: threading.Barrier) -> None:
    import httpx

    from app import canvas

    session = uuid.uuid4().hex[:12]

    def call(client, fn: str, payload: dict) -> tuple[dict, float]:
        t0 = time.perf_counter()
        try:
            r = client.post(url, json={"session_hash": session, "component_id": component, "fn_name": fn,
                                       "data": dict(payload, project=token)})
        except httpx.HTTPError as e:  # the server did not answer: an error, not a crash of the run
            return {"error": f"{type(e).__name__}: {e}"}, time.perf_counter() - t0
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}, dt
        return r.json(), dt

    with httpx.Client(timeout=60.0) as client:
        start.wait()
        for k in range(strokes):
            image_id = image_ids[(a.index + k) % len(image_ids)]
            h, w = a.shapes[image_id]
            doc = a.docs.setdefault(image_id, [np.full((h, w), NONE, np.uint8), 0])
            own = a.undo.setdefault(image_id, [])
            undoing = bool(undo_every and (k + 1) % undo_every == 0 and own)
            if undoing:  # take back this annotator's last stroke here (cls: the values before it)
                rows, cols, cls = own.pop()
            else:
                rows, cols, cls = a.stroke(image_id, num_classes)
                own.append((rows, cols, doc[0][rows, cols].copy()))
            doc[0][rows, cols] = cls
            rle = canvas.rle_encode(doc[0])
            r, dt = call(client, "canvas_save", {"image_id": image_id, "layer": "scribbles", "labels": rle,
                                                 "version": doc[1], "author": f"bench-{a.index}"})
            if "error" in r:
                a.errors.append(r["error"])
            else:
                a.save_s.append(dt)
                a.acked.append((image_id, rows, cols, cls))
                a.undos += undoing
                doc[1] = int(r["version"])
                if r.get("labels") is not None:  # merged with another annotator's strokes
                    doc[0] = canvas.rle_decode(r["labels"], (h, w))
            if preview:
                r, dt = call(client, "canvas_preview", {"image_id": image_id, "kind": "preview", "labels": rle})
                if "error" not in r:
                    a.preview_s.append(dt)
            if pause > 0:
                time.sleep(pause)


def _watch(url: str, fn_index: int, stop: threading.Event, offset: float, period: float, latencies: list,
           errors: list) -> None:
    """One open page that only watches: its timer event every ``period`` s until ``stop`` is set
    (the first after ``offset`` s, so that the pages do not all ask at once)."""
    import httpx

    session = uuid.uuid4().hex[:12]
    with httpx.Client(timeout=60.0) as client:
        if stop.wait(offset):
            return
        while True:
            t0 = time.perf_counter()
            try:
                r = client.post(url, json={"fn_index": fn_index, "data": [None, None, None, "all"],
                                           "session_hash": session})
                if r.status_code != 200 or "error" in r.json():
                    errors.append(f"watch: HTTP {r.status_code}: {r.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - t0)
            except (httpx.HTTPError, ValueError) as e:
                errors.append(f"watch: {type(e).__name__}: {e}")
            if stop.wait(max(0.0, period - (time.perf_counter() - t0))):
                return


def _watch_event(demo) -> int:
    for index, fn in demo.fns.items():
        if getattr(fn.fn, "__name__", "") == "on_watch":
            return index
    raise RuntimeError("the page has no training watch")


def _canvas_component(demo) -> int:
    for block in demo.blocks.values():
        if any(getattr(f, "__name__", "") == "canvas_save" for f in getattr(block, "server_fns", None) or []):
            return block._id
    raise RuntimeError("the page has no canvas component")


def measure(samples, num_classes: int, annotators: int = 8, strokes: int = 20, pause: float = 0.2,
            preview: bool = True, undo_every: int = 5, tabs: int = 0) -> dict:
    """Serve a project of ``samples`` (images) and run ``annotators`` threads of ``strokes`` saves
    each against it; the report of the module docstring (without ``dataset`` and ``size``)."""
    from annotations.errors import AnnotationError
    from annotations.imageio import encode_image_png
    from annotations.store import Project
    from app import handlers
    from app.ui import build_ui, launch

    if annotators < 1 or strokes < 1:
        raise AnnotationError("--annotators and --strokes must be at least 1.")
    if pause < 0 or undo_every < 0 or tabs < 0:
        raise AnnotationError(f"--pause, --undo-every and --tabs must be >= 0, not {pause}, {undo_every} and {tabs}.")
    images = [s[0] for s in samples]
    if not images:
        raise AnnotationError("no image to annotate.")
    smallest = min(min(img.shape[:2]) for img in images)
    if smallest < annotators:
        raise AnnotationError(f"images of {smallest} px are too small for {annotators} annotators "
                              "(each draws on its own rows).")
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        proj_root = Path(tmp) / "project"
        project = Project.create(proj_root, classes=[f"class{c}" for c in range(num_classes)])
        image_ids = [project.add_image(encode_image_png(img), name=f"image{i:03d}.png", allow_same_content=True).id
                     for i, img in enumerate(images)]
        shapes = {iid: img.shape[:2] for iid, img in zip(image_ids, images)}
        demo = build_ui(project)
        port = free_port()
        launch(demo, port=port, block=False)
        try:
            url = f"http://127.0.0.1:{port}/gradio_api/component_server"
            component, token = _canvas_component(demo), handlers.register_project(project)
            people = [Annotator(i, annotators, shapes, np.random.default_rng(i)) for i in range(annotators)]
            start = threading.Barrier(annotators + 1)
            threads = [threading.Thread(target=_annotate, args=(a, url, component, token, image_ids, num_classes,
                                                                strokes, pause, preview, undo_every, start),
                                       daemon=True)
                       for a in people]
            from app.ui import WATCH_SECONDS

            stop, watch_s, watch_errors = threading.Event(), [], []
            watch_url, watch_fn = f"http://127.0.0.1:{port}/gradio_api/run/predict", _watch_event(demo)
            watchers = [threading.Thread(target=_watch, args=(watch_url, watch_fn, stop, WATCH_SECONDS * k / tabs,
                                                               WATCH_SECONDS, watch_s, watch_errors), daemon=True)
                        for k in range(tabs)]
            for t in threads + watchers:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            stop.set()
            for t in watchers:
                t.join()
        finally:
            with contextlib.redirect_stdout(io.StringIO()):  # gradio's "Closing server" line
                demo.close()
            project.close()
        reopened = Project.open(proj_root)  # what is on disk, not what a handle remembers
        try:
            stored = {iid: reopened.scribbles(iid) for iid in image_ids}
        finally:
            reopened.close()
    save_s = np.array([x for a in people for x in a.save_s])
    prev_s = np.array([x for a in people for x in a.preview_s])
    acked = [s for a in people for s in a.acked]
    errors = [e for a in people for e in a.errors] + watch_errors
    watch_s = np.array(watch_s)

    def pct(x, q):
        return float(np.percentile(x, q)) if x.size else float("nan")

    return {"task": "app", "annotators": annotators, "images": len(image_ids), "saves": int(save_s.size),
            "undos": sum(a.undos for a in people),
            "p50_s": pct(save_s, 50), "p95_s": pct(save_s, 95), "lost_writes": lost_strokes(stored, acked, shapes),
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "preview_p50_s": pct(prev_s, 50), "preview_p95_s": pct(prev_s, 95),
            "saves_per_s": save_s.size / wall if wall > 0 else float("nan"), "wall_s": wall,
            "tabs": tabs, "watches": int(watch_s.size), "watch_p50_s": pct(watch_s, 50), "watch_p95_s": pct(watch_s, 95)}


def run(args) -> int:
    from annotations.errors import AnnotationError

    from segmenter.benchmarks import write_report

    check_size(args.size)
    if args.images < 1:
        raise AnnotationError(f"--images must be at least 1, not {args.images}.")
    data = resolve_data(args.data)
    if data is not None:
        from annotations.folder import FolderDataset

        ds = FolderDataset.open(data)
        num_classes = ds.num_classes
        samples = [resize_sample(ds.image(sid), [], args.size) for sid in ds.ids[:args.images]]  # images only
        name = data.resolve().name
    else:
        num_classes = 2
        samples = list(synthetic_samples(args.images, args.size))
        name = "synthetic"
    report = measure(samples, num_classes, args.annotators, args.strokes, args.pause, not args.no_preview,
                     args.undo_every, args.tabs)
    report.update(size=args.size, dataset=name)
    write_report(report, args.out)
    print(f"app  {name}  {report['annotators']} annotators on {report['images']} images  saves {report['saves']}  "
          f"(undos {report['undos']})  p50 {report['p50_s']:.3f} s  p95 {report['p95_s']:.3f} s  "
          f"lost writes {report['lost_writes']}  "
          f"errors {report['errors']}" + (f" (first: {report['first_error']})" if report["errors"] else "")
          + (f"  preview p50 {report['preview_p50_s']:.3f} s  p95 {report['preview_p95_s']:.3f} s"
             if not args.no_preview else "")
          + (f"  {args.tabs} watching tabs: {report['watches']} looks, p50 {report['watch_p50_s']:.3f} s  "
             f"p95 {report['watch_p95_s']:.3f} s" if args.tabs else ""))
    return 0
