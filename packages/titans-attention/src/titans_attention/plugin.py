"""Built-in components of titans-attention (attention blocks and variants), registered through the ``titans`` entry
point like any third-party plugin."""

from titans_core import hookimpl


@hookimpl
def register_components(register):
    del register  # the variants register here (MAC, MAG, MAL, LMM, SWA baseline)
