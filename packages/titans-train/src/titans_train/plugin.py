"""Built-in components of titans-train (data sources, eval tasks), registered through the ``titans`` entry point.

Nothing is registered yet: the training issue adds the data sources here.
"""

from titans_core import hookimpl


@hookimpl
def register_components(register):
    del register
