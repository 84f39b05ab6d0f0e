"""The project store and the annotation formats. Imports neither torch nor gradio."""
