"""titans-atlas: ATLAS (arXiv 2505.23735) for the Titans neural memory, as a plugin on the public surface.

Registers, through the ``titans`` entry point (``atlas = "titans_atlas"``):

- update rule ``omega``: the memory fitted to a sliding window of the last c tokens, with momentum and forgetting
  (``OmegaRule``, ``OmegaRuleConfig``);
- update rule ``atlas``: ``omega`` with the Newton–Schulz (Muon) update of the momentum (``AtlasRuleConfig``);
- memory model ``poly``: M(φ(x)), a polynomial feature map with learnable coefficients in front of any memory
  model (``PolyMemory``, ``PolyMemoryConfig``).

``omega_reference`` is the per-token oracle of both rules; ``newton_schulz`` the orthogonalisation.
"""

from titans_core import hookimpl

from titans_atlas.newton_schulz import newton_schulz, orthogonalize_tree
from titans_atlas.omega import AtlasRuleConfig, OmegaRule, OmegaRuleConfig
from titans_atlas.poly import PolyMemory, PolyMemoryConfig
from titans_atlas.reference import omega_reference

__all__ = [
    "TITANS_PLUGIN_API",
    "AtlasRuleConfig",
    "OmegaRule",
    "OmegaRuleConfig",
    "PolyMemory",
    "PolyMemoryConfig",
    "newton_schulz",
    "omega_reference",
    "orthogonalize_tree",
    "register_components",
]
__version__ = "0.1.0"


TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register):
    """Register ``omega`` and ``atlas`` (update rules) and ``poly`` (memory model)."""
    register("update_rule", "omega", OmegaRuleConfig, OmegaRule)
    register("update_rule", "atlas", AtlasRuleConfig, OmegaRule)
    register("memory_model", "poly", PolyMemoryConfig, PolyMemory)
