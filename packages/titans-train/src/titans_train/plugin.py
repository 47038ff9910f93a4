"""Built-in components of titans-train, registered through the ``titans`` entry point like any plugin.

Data sources (kind ``data_source``): ``text``, ``jsonl``, ``tokens``, ``python_stdlib`` (see
:mod:`titans_train.data.sources`). A plugin adds a source by registering a config class and a factory whose
result
has ``load() -> titans_train.data.Corpus``.
"""

from titans_core import hookimpl


@hookimpl
def register_components(register):
    from titans_train.data.sources import SOURCES

    for name, (config_cls, factory) in SOURCES.items():
        register("data_source", name, config_cls, factory)
