"""titans-miras: the MIRAS memories (arXiv 2504.13173) as a Titans plugin.

Registers the objective ``yaad`` (Huber with a per-token, learned threshold δ_t) and the update rules ``moneta``
(ℓq-normalised retention; use it with the built-in ``lp`` objective, p = 3) and ``memora`` (KL / softmax
retention; with the default ``l2`` objective). The distribution declares, in its pyproject.toml::

    [project.entry-points.titans]
    miras = "titans_miras"

``titans_miras.reference`` holds float64 numpy references written straight from the equations.
"""

from titans_core import hookimpl

from titans_miras.memora import MemoraConfig, MemoraRule
from titans_miras.moneta import MonetaConfig, MonetaRule
from titans_miras.retention import RetentionRule, RetentionRuleConfig
from titans_miras.yaad import YaadConfig, YaadObjective

__all__ = [
    "TITANS_PLUGIN_API",
    "MemoraConfig",
    "MemoraRule",
    "MonetaConfig",
    "MonetaRule",
    "RetentionRule",
    "RetentionRuleConfig",
    "YaadConfig",
    "YaadObjective",
    "register_components",
]
__version__ = "0.1.0"


TITANS_PLUGIN_API = "1.0"  # the titans-core plugin API this plugin is written against (titans_core.api)


@hookimpl
def register_components(register):
    """Register the objective ``yaad`` and the update rules ``moneta`` and ``memora``."""
    register("objective", "yaad", YaadConfig, YaadObjective)
    register("update_rule", "moneta", MonetaConfig, MonetaRule)
    register("update_rule", "memora", MemoraConfig, MemoraRule)
