"""The annotation app in the browser (Gradio 6). Start it with ``python app.py [PROJECT]``.

* ``ui.py``: builds the ``gr.Blocks`` page (wiring only);
* ``handlers.py``: the logic, plain functions over numpy arrays and the project store;
* ``canvas.py`` + ``static/``: the scribble canvas (a ``gr.HTML`` component with its own script:
  the page keeps an exact class-index map per image, so strokes survive tool, brush-size and
  image changes, and talks to the ``canvas_*`` handlers), and the overlay helpers;
* ``jobs.py`` / ``training.py``: training and prediction in background threads, polled by the page;
* ``demo.py``: the demo project from scikit-image's bundled sample photos.

Why not ``gr.ImageEditor``: its layers are anti-aliased RGBA images (saved as lossy WebP by
default), which cannot give back exact class indices, and some 6.x releases cleared the strokes
when the tool or brush options changed (gradio issue #13587). The canvas here stores class
indices, never colours.
"""
