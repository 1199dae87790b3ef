"""Routing layer: which reports get a final read, an overread, a return to the author, or release.

Pure: no I/O, no clock, no logging.

- :func:`build_policy` validates a parsed policies/routing.yaml
  (``listener.assemble.load_routing_policy`` reads it).
- :func:`decide_route` ``(report, findings, context, policy) -> Route``.
- :func:`explain_lines` says why each rule did or did not match.
- :func:`routing_decider` adapts a policy to ``Pipeline.decide_route``
  (``listener.assemble.load_decider`` loads routing.yaml straight into one).
- :func:`listener.routing.sampling.draw` is the deterministic peer-review draw.
"""

from listener.routing.conditions import BODY_REGIONS, CONDITION_KEYS
from listener.routing.explain import explain, explain_lines
from listener.routing.facts import RoutingContext
from listener.routing.policy import (
    RoutingPolicy,
    Rule,
    RuleResult,
    build_policy,
    decide_route,
    evaluate,
    routing_decider,
)
from listener.routing.sampling import draw

__all__ = [
    "BODY_REGIONS",
    "CONDITION_KEYS",
    "RoutingContext",
    "RoutingPolicy",
    "Rule",
    "RuleResult",
    "build_policy",
    "decide_route",
    "draw",
    "evaluate",
    "explain",
    "explain_lines",
    "routing_decider",
]
