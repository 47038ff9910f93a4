"""Checks a plugin author runs in their own tests (pytest or plain asserts): one call per component kind.

The registry checks every component's *shape* against its protocol when it is built (titans_core.contracts);
these check *behaviour*, on concrete values (float64 against the references, plus bfloat16)::

    from titans_memory.testing import check_memory_model, check_objective, check_update_rule

    def test_my_rule():
        check_update_rule(MyRule(MyConfig(chunk_size=4)))  # = sequential; split anywhere; causal; bf16; ...

    def test_my_objective():
        check_objective(MyObjective(MyConfig()))  # cotangent = ∇ loss (and derivatives); chunked = sequential

    def test_my_memory_model():
        check_memory_model(MyModel(MyConfig()))  # chunked rule = sequential reference with it (and grad_norms)

The building blocks stay public: ``check_rules_agree`` (two rules on one aligned call), ``check_cotangent``,
``check_grad_norms``, ``random_problem``, ``random_token_params``.
"""

from titans_memory.testing.conformance import (
    check_grad_norms,
    check_memory_model,
    check_objective,
    check_update_rule,
)
from titans_memory.testing.reference import (
    F64_TOL,
    check_cotangent,
    check_rules_agree,
    random_problem,
    random_token_params,
)

__all__ = [
    "F64_TOL",
    "check_cotangent",
    "check_grad_norms",
    "check_memory_model",
    "check_objective",
    "check_rules_agree",
    "check_update_rule",
    "random_problem",
    "random_token_params",
]
