"""Built-in components of titans-train, registered through the ``titans`` entry point like any plugin.

Data sources (kind ``data_source``): ``text``, ``jsonl``, ``tokens``, ``python_stdlib`` (see
:mod:`titans_train.data.sources`) and the synthetic tasks ``mqar``, ``niah``, ``niah_multikey``,
``niah_multivalue`` and ``babilong`` (see
:mod:`titans_train.data.task_sources`). A plugin adds a source by registering a config class and a
factory whose result has ``load()`` returning a ``titans_train.data.Corpus`` (a token stream) or a
``titans_train.data.LabelledTask`` (examples with targets on some positions only).
"""

from titans_core import hookimpl

TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register):
    from titans_train.data.sources import SOURCES
    from titans_train.data.task_sources import TASK_SOURCES

    for name, (config_cls, factory) in {**SOURCES, **TASK_SOURCES}.items():
        register("data_source", name, config_cls, factory)
