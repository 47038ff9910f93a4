"""titans-attention: attention blocks and the Titans variants (MAC, MAG, MAL, LMM, SWA baseline), model assembly and
cached generation (arXiv 2501.00663 §4)."""

from titans_attention.config import VariantConfig
from titans_attention.decoding import generate, generate_with_cache
from titans_attention.model import VARIANTS, TitansLM
from titans_attention.params import count_params, param_report
from titans_attention.recipes import Recipe, recipe_variant

__all__ = [
    "VARIANTS",
    "Recipe",
    "TitansLM",
    "VariantConfig",
    "count_params",
    "generate",
    "generate_with_cache",
    "param_report",
    "recipe_variant",
]
__version__ = "0.1.0"
