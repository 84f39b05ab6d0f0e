"""The page: ``build_ui(project)`` returns the ``gr.Blocks``. Wiring only; the logic is in
:mod:`app.handlers`, :mod:`app.training` and the canvas script (``static/canvas.js``)."""
from __future__ import annotations

import functools
import html
import json
import logging
import uuid

import gradio as gr

from annotations import imageio
from annotations.errors import AnnotationError
from annotations.store import Project

from . import canvas, handlers, jobs, training
from .demo import browser_secret

log = logging.getLogger("weakseg.app")

#: "Scribbled" lists every image with strokes and no final mask, a predicted one too.
FILTER_LABELS = {"scribbled": "Scribbled (strokes, not final)"}
FILTER_CHOICES = [("All images", "all")] + [(FILTER_LABELS.get(s, s.capitalize()), s) for s in handlers.FILTERS[1:]]
LIST_HEADERS = ["id", "image", "status"]
LIST_WIDTHS = ["12%", "60%", "28%"]


#: How often (seconds) a tab looks whether a job started or ended, or a model was saved, elsewhere.
WATCH_SECONDS = 2.0


def info(message) -> None:
    """A toast; its text is text (a class named ``<b>`` shows as typed: Gradio renders a toast as HTML)."""
    gr.Info(html.escape(str(message), quote=False))


def warning(message) -> None:
    """A warning toast, its text escaped as in :func:`info`."""
    gr.Warning(html.escape(str(message), quote=False))


def safe(fn, n_outputs: int):
    """Run ``fn``; an AnnotationError (or any failure) becomes a warning in the page, never a stack
    trace, and leaves every output as it was (no component is marked as failed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AnnotationError as e:
            warning(str(e))
        except Exception as e:  # noqa: BLE001
            log.exception("handler %s failed", getattr(fn, "__name__", fn))
            warning(f"Something went wrong ({type(e).__name__}: {e}). Your annotations are saved.")
        return gr.skip() if n_outputs == 1 else tuple(gr.skip() for _ in range(n_outputs))

    return wrapper


def listen(event, fn, inputs, outputs, **kwargs):
    """``event(safe(fn), inputs, outputs)``: every handler of the page goes through :func:`safe`."""
    return event(safe(fn, len(outputs)), inputs, outputs, **kwargs)


def css() -> str:
    return canvas.asset("app.css")


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, auth=None, block: bool = True) -> None:
    """Serve ``demo`` as ``app.py`` does (queue, upload limit, styles, no stack traces in the page);
    ``block=False`` returns once the server listens (``demo.close()`` stops it)."""
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, auth=auth, max_file_size=handlers.MAX_UPLOAD_BYTES,
        css=css(), ssr_mode=False, show_error=False, footer_links=[], prevent_thread_lock=not block,
        quiet=not block,
        # Gradio's run history kept every image shown (as a data URL) in the browser's storage: each
        # image change got slower (0.5 s to 2-7 s after 15-25 images) and the images stayed on the
        # machine (patients' scans, for one)
        run_history=False)


def list_update(p: Project, status_filter: str, current):
    """The image list's rows (the block holding ``current``) and its label."""
    rows, label = handlers.image_list(p, status_filter, current)
    return gr.update(value=rows, label=label)


def confirm_box(elem_id: str, yes: str):
    """A hidden question with a ``yes`` and a "No, keep it" button: the second, explicit click
    before something is removed, shown once the page has said what goes (a browser's confirm()
    dialog is not used: it blocks the page and headless browsers answer it themselves). Returns
    ``(box, question, yes button, no button)``; their ids are ``elem_id`` + ``-confirm``,
    ``-question``, ``-yes``, ``-no``."""
    with gr.Group(visible=False, elem_id=f"{elem_id}-confirm") as box:
        question = gr.Markdown(elem_id=f"{elem_id}-question")
        with gr.Row():
            yes_btn = gr.Button(yes, size="sm", variant="stop", elem_id=f"{elem_id}-yes")
            no_btn = gr.Button("No, keep it", size="sm", elem_id=f"{elem_id}-no")
    return box, question, yes_btn, no_btn


def build_ui(project: Project) -> gr.Blocks:
    start_token = handlers.register_project(project)  # also what a page of a restarted server is taken as

    def show(token: str, image_id, status_filter: str = "all", removed=None):
        """Everything that changes when the shown image changes (``removed``: an image just removed,
        whose strokes and undo history the canvas drops)."""
        p = handlers.project_for(token)
        msg = handlers.load_message(p, token, image_id)
        if removed is not None:
            msg["removed_image"] = int(removed)
        return (image_id, json.dumps(msg), handlers.title_text(p, image_id),
                list_update(p, status_filter, image_id), handlers.progress_text(p))

    with gr.Blocks(title="weakseg · annotate", fill_width=True) as demo:
        token = gr.State(start_token)
        current = gr.State(None)
        # the last image shown per project, in this browser: a reload (F5) reopens it
        secret = browser_secret()  # the same after a restart: the page still reads what it kept
        last_seen = gr.BrowserState({}, storage_key="weakseg-last-image", secret=secret)
        # the project open last in this browser (opened from the page): a reload reopens it too
        last_project = gr.BrowserState({}, storage_key="weakseg-last-project", secret=secret)
        gr.Markdown("## weakseg · scribble annotation\n"
                    "<span class='ws-sub'>Pick a class, draw a few strokes on each region: the live preview "
                    "fills in the rest. Everything is saved as you draw.</span>")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=270):
                project_md = gr.Markdown(elem_id="ws-project")
                progress = gr.Markdown(elem_id="ws-progress")
                status_filter = gr.Dropdown(FILTER_CHOICES, value="all", label="Show", elem_id="ws-filter")
                goto = gr.Textbox(label="Go to image", placeholder="id or name, then Enter", elem_id="ws-goto",
                                  max_lines=1)
                # one line per row (a long name or status ends in "…", in full in its tooltip, list.js):
                # wrapped mid-word ("untouch/ed"), 5-7 rows showed on a laptop screen
                image_list = gr.Dataframe(headers=LIST_HEADERS, datatype=["number", "str", "str"],
                                          interactive=False, elem_id="ws-image-list", label="Images",
                                          column_widths=LIST_WIDTHS, wrap=False)
            with gr.Column(scale=7, min_width=560):
                title = gr.Markdown(elem_id="ws-title")
                with gr.Row():
                    prev_btn = gr.Button("◀ Previous", elem_id="ws-prev", size="sm")
                    next_btn = gr.Button("Next ▶", elem_id="ws-next", size="sm")
                    todo_btn = gr.Button("Next unannotated", elem_id="ws-next-todo", size="sm")
                    unsure_btn = gr.Button("Next most uncertain", elem_id="ws-next-uncertain", size="sm")
                cv = gr.HTML(value="", html_template=canvas.asset("canvas.html"), js_on_load=canvas.asset("canvas.js"),
                             server_functions=list(handlers.CANVAS_FUNCTIONS), elem_id="ws-canvas",
                             apply_default_css=False)
                gr.Markdown("<span class='ws-sub'>Keys: 1–9 class · Shift+1–9 class 10–18 · C / Shift+C next / "
                            "previous class · E eraser · F fill · [ ] brush size · N / P next / previous image · "
                            "U next unannotated · Ctrl+Enter accept as final · Ctrl+Z / Ctrl+Y undo / redo · "
                            "+ − 0 zoom · Ctrl+wheel zoom</span>")
            with gr.Column(scale=3, min_width=300):
                with gr.Accordion("Train & predict", open=True, elem_id="ws-train-panel"):
                    gr.Markdown("<span class='ws-sub'>Trains a U-Net on every scribble, tag and final mask of the "
                                "project. The validation mIoU is measured on final masks held out from training "
                                "(one in five, once 3 images have one; before that on the training images' own "
                                "final masks, which flatters it). "
                                "Then predict the other images and review the most uncertain first.</span>")
                    with gr.Row():
                        # a text box: a number box turned "1,5" into 15 before the handler saw it
                        epochs = gr.Textbox(value="5", label="Epochs", elem_id="ws-epochs", lines=1, max_lines=1)
                        size = gr.Dropdown(list(training.SIZES), value=128, label="Training size (px)",
                                           elem_id="ws-train-size")
                    with gr.Row():
                        train_btn = gr.Button("Train", variant="primary", elem_id="ws-train")
                        cancel_btn = gr.Button("Cancel", variant="secondary", elem_id="ws-cancel")
                    train_progress = gr.HTML(jobs.progress_html(None, idle="…"), elem_id="ws-train-progress")
                    predict_btn = gr.Button("Predict the images without a final mask", elem_id="ws-predict", size="sm")
                    tags_btn = gr.Button("Masks from tags (class activation maps)", elem_id="ws-tags-masks",
                                         size="sm")
                    gr.Markdown("<span class='ws-sub'>Trains a classifier on the image tags (for its own "
                                "number of epochs, about 66,000 images seen, 2–30 epochs; the Epochs box is for "
                                "Train) and stores a pseudo-mask for every tagged image (strokes there are kept); "
                                "the next training uses them.</span>")
                    timer = gr.Timer(1.0, active=False)
                    # every tab watches the project's job (one started in another tab too), cheaply
                    watch = gr.Timer(WATCH_SECONDS, active=True)
                    watch_seen = gr.State("")
                with gr.Accordion("Classes", open=False, elem_id="ws-classes-panel"):
                    class_table = gr.Dataframe(headers=["index", "name", "colour"], interactive=False,
                                               elem_id="ws-class-table", label="Classes",
                                               column_widths=["22%", "50%", "28%"], wrap=True)
                    with gr.Row():
                        new_class = gr.Textbox(label="New class", placeholder="e.g. car", elem_id="ws-new-class")
                        new_color = gr.ColorPicker(label="Colour", value="#3cb44b", elem_id="ws-new-color")
                    add_class_btn = gr.Button("Add class", elem_id="ws-add-class", size="sm")
                    class_pick = gr.Dropdown([], label="Class to change", elem_id="ws-class-pick")
                    with gr.Row():
                        rename_to = gr.Textbox(label="New name", elem_id="ws-rename-to")
                        recolor_to = gr.ColorPicker(label="New colour", value="#e6194b", elem_id="ws-recolor-to")
                    with gr.Row():
                        rename_btn = gr.Button("Rename", size="sm", elem_id="ws-rename")
                        recolor_btn = gr.Button("Recolour", size="sm", elem_id="ws-recolor")
                        delete_class_btn = gr.Button("Delete…", size="sm", elem_id="ws-delete-class")
                    delete_class_box, delete_class_q, delete_class_yes, delete_class_no = confirm_box(
                        "ws-delete-class", "Yes, delete the class")
                with gr.Accordion("Export", open=False, elem_id="ws-export-panel"):
                    fmt = gr.Dropdown([], label="Format", elem_id="ws-export-format")
                    masks = gr.Radio([("Final masks only", "final"), ("Best available mask", "best")],
                                     value="best", label="Masks", elem_id="ws-export-masks")
                    export_btn = gr.Button("Export to zip", elem_id="ws-export")
                    export_file = gr.File(label="Download", interactive=False, elem_id="ws-export-file")
                    export_msg = gr.Markdown(elem_id="ws-export-msg")
                with gr.Accordion("Project & images", open=False, elem_id="ws-project-panel"):
                    uploads = gr.File(label="Add images (PNG, JPEG, TIFF, BMP) or NIfTI volumes (.nii, .nii.gz)",
                                      file_count="multiple", elem_id="ws-upload",
                                      file_types=list(imageio.IMAGE_EXTENSIONS) + [".nii", ".gz"])
                    upload_btn = gr.Button("Add uploaded images", size="sm", elem_id="ws-upload-btn")
                    folder = gr.Textbox(label="…or a folder on this computer", placeholder="/path/to/images",
                                        elem_id="ws-folder")
                    folder_btn = gr.Button("Add images from folder", size="sm", elem_id="ws-folder-btn")
                    add_msg = gr.Markdown(elem_id="ws-add-msg")
                    remove_btn = gr.Button("Remove the image shown…", size="sm", elem_id="ws-remove-image")
                    remove_box, remove_q, remove_yes, remove_no = confirm_box("ws-remove", "Yes, remove it")
                    remove_msg = gr.Markdown(elem_id="ws-remove-msg")
                    proj_path = gr.Textbox(label="Open or create a project (folder)", elem_id="ws-proj-path")
                    proj_classes = gr.Textbox(label="Classes for a new project (comma-separated)",
                                              value="background, object", elem_id="ws-proj-classes")
                    open_btn = gr.Button("Open / create project", size="sm", elem_id="ws-open")

        shown = [current, cv, title, image_list, progress]
        # what a confirmation asked about: {"token", "image_id"} / {"token", "name"} (None: nothing asked)
        remove_pending = gr.State(None)
        delete_class_pending = gr.State(None)

        def refresh(token: str, image_id, status_filter: str = "all"):
            """Like :func:`show` after a job or an import changed the project: the image shown stays,
            and the canvas keeps the person's mode, strokes and undo (a "refresh", not a reload)."""
            p = handlers.project_for(token)
            shown_id = handlers.check_image(p, image_id)
            if shown_id is None or image_id is None or int(image_id) != shown_id:  # nothing (still) shown: load
                return show(token, shown_id, status_filter)
            return (image_id, json.dumps(handlers.refresh_message(p, token, image_id)),
                    handlers.title_text(p, image_id), list_update(p, status_filter, image_id),
                    handlers.progress_text(p))

        def class_outputs(p: Project, keep=None):
            """The class table and the "class to change" list, still on class ``keep`` if it exists."""
            choices = handlers.class_choices(p)  # valued by name (see handlers.class_choices)
            # nothing picked until the person picks: a default class got renamed by accident
            # (keep: a class index, or a name)
            value = None
            for label, name in choices:
                if keep not in (None, "") and (name == keep or (isinstance(keep, int) and label.startswith(f"{keep}: "))):
                    value = name
            return handlers.class_rows(p), gr.update(choices=choices, value=value)

        def watch_baseline(p: Project) -> str:
            """What the watch compares with from the page's first look at project ``p`` (the project
            as shown now): a change the command line makes before the watch's first tick is seen.
            With a job running, none (the first tick follows the job, as it always did)."""
            key, running = training.watch_key(p)
            return "" if running else key

        def on_start(filt, seen, last):
            p, note = handlers.reopen_project(last, project)
            if note:  # e.g. the folder was deleted since: the startup project, and why
                warning(note)
            tok = handlers.register_project(p)
            image_id = handlers.resume_image(p, seen)
            from annotations.formats import list_formats

            formats = list_formats()
            return (tok, *show(tok, image_id, filt), handlers.project_line(p), *class_outputs(p),
                    gr.update(choices=formats, value="folder" if "folder" in formats else formats[0]),
                    training.panel_html(p), handlers.next_class_color(p), handlers.remember_project(p, project),
                    watch_baseline(p))

        listen(demo.load, on_start, [status_filter, last_seen, last_project],
               [token] + shown + [project_md, class_table, class_pick, fmt, train_progress, new_color, last_project,
                                  watch_seen])

        def on_current(tok, cur, seen):
            return handlers.remember_image(handlers.project_for(tok), seen, cur)

        listen(current.change, on_current, [token, current, last_seen], [last_seen])

        def navigate(tok, cur, filt, action):
            p = handlers.project_for(tok)
            res = handlers.resolve_navigation(p, cur, action, filt)
            if res.message:
                info(res.message)
            return show(tok, res.image_id, filt)

        for btn, action in ((prev_btn, "prev"), (next_btn, "next"), (todo_btn, "unannotated"),
                            (unsure_btn, "uncertain")):
            # "multiple": the page sends N / P / U pressed quickly one at a time, each once the image of
            # the one before is shown (static/canvas.js navigate); Gradio's default dropped a click
            # made while the event before it was still finishing
            listen(btn.click, functools.partial(navigate, action=action), [token, current, status_filter], shown,
                   trigger_mode="multiple")

        def on_select(tok, filt, evt: gr.SelectData):
            p = handlers.project_for(tok)
            row = evt.row_value if evt.row_value else None
            if not row:
                return (gr.skip(),) * len(shown)
            return show(tok, handlers.check_image(p, int(row[0])), filt)

        listen(image_list.select, on_select, [token, status_filter], shown)
        # new rows (another image shown, a status changed): the ▶ row scrolls into the list's view
        image_list.change(None, [image_list], None, js=canvas.asset("list.js"), queue=False, show_progress="hidden")

        def on_goto(tok, text, filt):
            p = handlers.project_for(tok)
            return (*show(tok, handlers.find_image(p, text), filt), "")

        # after the jump the keys (classes, N / P, Ctrl+Enter) go to the canvas again, not to the box
        listen(goto.submit, on_goto, [token, goto, status_filter], shown + [goto]).then(
            None, None, None, js="() => { const a = document.activeElement; if (a && a.blur) a.blur(); }")

        def on_filter(tok, cur, filt):
            p = handlers.project_for(tok)
            return list_update(p, filt, cur), handlers.progress_text(p)

        listen(status_filter.change, on_filter, [token, current, status_filter], [image_list, progress])

        def on_saved(tok, cur, filt):
            p = handlers.project_for(tok)
            return list_update(p, filt, cur), handlers.progress_text(p), handlers.title_text(p, cur)

        listen(cv.saved, on_saved, [token, current, status_filter], [image_list, progress, title],
                 show_progress="hidden", queue=False)

        # ---------------------------------------------------------------- training
        def _snap(p: Project):
            job = jobs.current_job(str(p.root))
            return job.snapshot() if job else None

        def on_train(tok, n_epochs, px):
            p = handlers.project_for(tok)
            from segmenter.models import trainings_note

            others = trainings_note(p.models_dir)  # e.g. a `train` on the command line
            training.start_training(p, epochs=training.epochs_from_page(n_epochs), size=int(px or 128))
            if others:
                warning(others[0].upper() + others[1:])
            return training.panel_html(p), gr.Timer(active=True)

        listen(train_btn.click, on_train, [token, epochs, size], [train_progress, timer])

        def on_predict(tok):
            p = handlers.project_for(tok)
            training.start_predict(p)
            return training.panel_html(p), gr.Timer(active=True)

        listen(predict_btn.click, on_predict, [token], [train_progress, timer])

        def on_tags(tok, px):
            p = handlers.project_for(tok)
            training.start_tags(p, size=int(px or 128))
            return training.panel_html(p), gr.Timer(active=True)

        listen(tags_btn.click, on_tags, [token, size], [train_progress, timer])

        def on_cancel(tok):
            p = handlers.project_for(tok)
            info(jobs.cancel_job(str(p.root)))
            return training.panel_html(p)

        listen(cancel_btn.click, on_cancel, [token], [train_progress])

        def on_tick(tok, cur, filt):
            p = handlers.project_for(tok)
            snap = _snap(p)
            html_ = training.panel_html(p)
            if snap and snap["status"] != "running":
                # finished: refresh what the job changed (predicted masks, statuses)
                return (html_, gr.Timer(active=False), *refresh(tok, cur, filt))
            return (html_, gr.skip()) + (gr.skip(),) * len(shown)

        listen(timer.tick, on_tick, [token, current, status_filter], [train_progress, timer] + shown,
                   show_progress="hidden")

        def on_watch(tok, seen, cur, filt):
            # a job started, ended or a model was saved since this tab last looked (another tab, the
            # command line): the panel is redrawn, and a running job's progress followed by `timer`
            # (which refreshes the image and list when it ends; a job that ran between two looks
            # refreshes them here). Otherwise nothing is sent.
            nothing = (gr.skip(),) * (3 + len(shown))
            try:
                p = handlers.project_for(tok)
                key, running = training.watch_key(p)
                if key == seen:
                    return nothing
                ended = bool(seen) and not running and (key.split(":")[:2] != seen.split(":")[:2]
                                                        or training.masks_changed(seen, key))
                again = refresh(tok, cur, filt) if ended else (gr.skip(),) * len(shown)
                return (training.panel_html(p), gr.Timer(active=True) if running else gr.skip(), key, *again)
            except Exception:  # noqa: BLE001 - a project gone, a restart: the next action says it
                return nothing

        watch.tick(on_watch, [token, watch_seen, current, status_filter],
                   [train_progress, timer, watch_seen] + shown, show_progress="hidden", queue=False)

        # ---------------------------------------------------------------- classes
        def _classes_changed(tok, p: Project, message: str, keep=None, **extra):
            info(message)
            msg = {"type": "classes", "project": tok, "classes": handlers.class_list(p), "class_epoch": p.class_epoch,
                   "nonce": uuid.uuid4().hex[:8], **extra}
            # a failed job's message about the old classes is out of date now (training.shown_job)
            return (*class_outputs(p, keep), json.dumps(msg), training.panel_html(p))

        def on_add_class(tok, name, color):
            p = handlers.project_for(tok)
            message = handlers.add_class(p, name, color)
            return (*_classes_changed(tok, p, message, keep=p.num_classes - 1), "", handlers.next_class_color(p))

        listen(add_class_btn.click, on_add_class, [token, new_class, new_color],
               [class_table, class_pick, cv, train_progress, new_class, new_color])

        def on_rename(tok, idx, name):
            p = handlers.project_for(tok)
            message = handlers.rename_class(p, idx, name)
            return _classes_changed(tok, p, message, keep=handlers.picked_class(p, name, "rename").name)

        listen(rename_btn.click, on_rename, [token, class_pick, rename_to],
               [class_table, class_pick, cv, train_progress])

        def on_recolor(tok, idx, color):
            p = handlers.project_for(tok)
            return _classes_changed(tok, p, handlers.recolor_class(p, idx, color), keep=idx)

        listen(recolor_btn.click, on_recolor, [token, class_pick, recolor_to],
               [class_table, class_pick, cv, train_progress])

        def hidden():
            return gr.update(visible=False)

        def on_delete_class_ask(tok, idx):
            p = handlers.project_for(tok)
            name, question = handlers.delete_class_question(p, idx)
            return {"token": tok, "name": name}, question, gr.update(visible=True)

        listen(delete_class_btn.click, on_delete_class_ask, [token, class_pick],
               [delete_class_pending, delete_class_q, delete_class_box])

        def on_delete_class_keep():
            info("No class was deleted.")
            return None, hidden()

        listen(delete_class_no.click, on_delete_class_keep, None, [delete_class_pending, delete_class_box])
        # another class picked (or the list changed): the question asked is put away
        listen(class_pick.change, lambda: (None, hidden()), None, [delete_class_pending, delete_class_box],
               queue=False, show_progress="hidden")

        def on_delete_class(tok, pending, cur, filt):
            p = handlers.project_for(tok)
            if not pending or pending.get("token") != tok:
                raise AnnotationError("another project was opened since the question; no class was deleted.")
            idx, message = handlers.delete_class(p, pending["name"])
            # the canvas moves its strokes and undo history to the new class numbers, then takes the
            # shown image's tags and status as they are now
            still = cur is not None and handlers.check_image(p, cur) == int(cur)
            again = handlers.refresh_message(p, tok, int(cur)) if still else None
            return (None, hidden(), *_classes_changed(tok, p, message, deleted=idx, refresh=again),
                    handlers.title_text(p, int(cur)) if still else gr.skip(), list_update(p, filt, cur),
                    handlers.progress_text(p))

        listen(delete_class_yes.click, on_delete_class, [token, delete_class_pending, current, status_filter],
               [delete_class_pending, delete_class_box, class_table, class_pick, cv, train_progress, title,
                image_list, progress])

        # ---------------------------------------------------------------- export
        def on_export(tok, fmt_name, which):
            p = handlers.project_for(tok)
            path, msg = handlers.export_zip(p, fmt_name, which)
            return path, msg

        listen(export_btn.click, on_export, [token, fmt, masks], [export_file, export_msg])

        # ---------------------------------------------------------------- project and images
        def on_upload(tok, files, cur, filt):
            p = handlers.project_for(tok)
            msg = handlers.add_uploads(p, files)
            return (msg, None, training.panel_html(p), *refresh(tok, cur, filt))

        listen(upload_btn.click, on_upload, [token, uploads, current, status_filter],
               [add_msg, uploads, train_progress] + shown)

        def on_folder(tok, path, cur, filt):
            p = handlers.project_for(tok)
            layer = p.scribble_layer
            try:
                msg = handlers.add_folder(p, path)
            except AnnotationError as e:  # said under the box too, where the last result stood
                warning(str(e))
                msg = f"Nothing added: {e}"
            if p.scribble_layer != layer:  # the app turned to the imported layer: reload the image's strokes
                info(msg.splitlines()[-1])
                shown_now = show(tok, handlers.check_image(p, cur), filt)
            else:
                shown_now = refresh(tok, cur, filt)
            return (msg, training.panel_html(p), handlers.project_line(p), *shown_now)

        listen(folder_btn.click, on_folder, [token, folder, current, status_filter],
               [add_msg, train_progress, project_md] + shown)

        def on_remove_ask(tok, cur):
            p = handlers.project_for(tok)
            image_id, question = handlers.remove_question(p, cur)
            return {"token": tok, "image_id": image_id}, question, gr.update(visible=True), ""

        listen(remove_btn.click, on_remove_ask, [token, current], [remove_pending, remove_q, remove_box, remove_msg])

        def on_remove_keep():
            return None, hidden(), "Nothing was removed."

        listen(remove_no.click, on_remove_keep, None, [remove_pending, remove_box, remove_msg])

        def on_remove(tok, pending, cur, filt):
            p = handlers.project_for(tok)
            if not pending or pending.get("token") != tok:
                raise AnnotationError("another project was opened since the question; nothing was removed.")
            removed = pending["image_id"]
            next_id, message = handlers.remove_image(p, removed, filt)
            info(message)
            # the image removed was the one shown: the next one; else the one shown stays
            show_id = next_id if cur is None or int(cur) == int(removed) else handlers.check_image(p, cur)
            return (None, hidden(), message, training.panel_html(p), *show(tok, show_id, filt, removed=removed))

        listen(remove_yes.click, on_remove, [token, remove_pending, current, status_filter],
               [remove_pending, remove_box, remove_msg, train_progress] + shown)

        def on_shown_changed(cur, pending):
            """Another image shown: a removal asked about the one before is put away."""
            if pending and pending.get("image_id") != cur:
                return None, hidden()
            return gr.skip(), gr.skip()

        listen(current.change, on_shown_changed, [current, remove_pending], [remove_pending, remove_box],
               queue=False, show_progress="hidden")

        def on_project_changed():
            return None, hidden(), None, hidden()

        listen(token.change, on_project_changed, None,
               [remove_pending, remove_box, delete_class_pending, delete_class_box], queue=False,
               show_progress="hidden")

        def on_open(path, classes_text, filt, seen):
            p = handlers.open_project(path, classes_text)
            tok = handlers.register_project(p)
            return (tok, *show(tok, handlers.resume_image(p, seen), filt), handlers.project_line(p), *class_outputs(p),
                    training.panel_html(p), handlers.next_class_color(p), handlers.remember_project(p, project),
                    watch_baseline(p))

        listen(open_btn.click, on_open, [proj_path, proj_classes, status_filter, last_seen],
               [token] + shown + [project_md, class_table, class_pick, train_progress, new_color, last_project,
                                  watch_seen])
    return demo
