"""titans-memory: the Titans neural long-term memory (arXiv 2501.00663 §3) for Flax NNX.

Public API: ``NeuralMemory`` / ``NeuralMemoryConfig`` (the module), ``MemoryState``; memory models
(``MLPMemory``; ``TwoLayerForm``, what a model declares to run on the ``fused`` rule's depth-2 kernel);
update rules (``SequentialRule`` — the reference —, ``MomentumScanRule`` — chunked and parallel — and
``FusedRule`` — the same as one Pallas kernel), their state (``RuleState``, ``init_rule_state``) and gates
(``Gates``) — defined in titans_core.protocols; objectives (the inner loss: ``L2Objective``,
``HuberObjective``, ``LpObjective``, ``DotObjective``); ``memory_diagnostics``: gate, update, surprise and
read statistics; ``MemoryStream``: pieces of any length with a bounded number of compiled programs.
"""

from titans_memory.diagnostics import DIAGNOSTIC_KEYS, memory_diagnostics
from titans_memory.memory import MemoryState, NeuralMemory, NeuralMemoryConfig
from titans_memory.memory_models import MLPMemory, MLPMemoryConfig, TwoLayerForm
from titans_memory.objectives import (
    DotConfig,
    DotObjective,
    HuberConfig,
    HuberObjective,
    L2Config,
    L2Objective,
    LpConfig,
    LpObjective,
)
from titans_memory.rules.base import Gates, RuleState, UpdateRuleConfig, assoc_loss, init_rule_state
from titans_memory.rules.fused import FusedConfig, FusedRule, FusedUnsupportedError
from titans_memory.rules.momentum_scan import MomentumScanRule
from titans_memory.rules.sequential import SequentialRule
from titans_memory.streaming import MemoryStream, piece_lengths

__all__ = [
    "DIAGNOSTIC_KEYS",
    "DotConfig",
    "DotObjective",
    "FusedConfig",
    "FusedRule",
    "FusedUnsupportedError",
    "HuberConfig",
    "HuberObjective",
    "L2Config",
    "L2Objective",
    "LpConfig",
    "LpObjective",
    "init_rule_state",
    "Gates",
    "MLPMemory",
    "MLPMemoryConfig",
    "MemoryState",
    "MemoryStream",
    "MomentumScanRule",
    "NeuralMemory",
    "NeuralMemoryConfig",
    "RuleState",
    "SequentialRule",
    "TwoLayerForm",
    "UpdateRuleConfig",
    "assoc_loss",
    "memory_diagnostics",
    "piece_lengths",
]
__version__ = "0.1.0"
