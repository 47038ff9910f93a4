"""Built-in components of titans-attention, registered through the ``titans`` entry point like any plugin."""

from collections.abc import Callable

from titans_core import hookimpl

from titans_attention.config import VariantConfig
from titans_attention.variants import FACTORIES


@hookimpl
def register_components(register: Callable[..., None]) -> None:
    for name, factory in FACTORIES.items():
        register("variant", name, VariantConfig, factory)
