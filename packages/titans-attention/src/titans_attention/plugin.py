"""Built-in components of titans-attention, registered through the ``titans`` entry point like any plugin: the
attentions (kind ``attention``) and the paper's variants, each a recipe of mixers (kind ``variant``)."""

from collections.abc import Callable

from titans_core import hookimpl

from titans_attention.attention_components import ATTENTIONS
from titans_attention.config import VariantConfig
from titans_attention.recipes import RECIPES, recipe_variant

TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register: Callable[..., None]) -> None:
    for name, (config_cls, factory) in ATTENTIONS.items():
        register("attention", name, config_cls, factory)
    for name, recipe in RECIPES.items():
        register("variant", name, VariantConfig, recipe_variant(recipe))
