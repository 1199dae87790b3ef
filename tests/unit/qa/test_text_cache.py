"""One TextCache per report, shared by its QA run and its routing facts (listener.pipeline.check_report)."""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

from listener.model import Finding, Report, Route, SectionKind
from listener.pipeline import Pipeline, check_report
from listener.qa.engine import QaContext, run_rules
from listener.routing.facts import Facts, RoutingContext
from listener.text import TextCache
from tests.unit.qa.factory import RECEIVED, make_report, pipeline

TEXT = (
    "FINDINGS: Small left pleural effusion. Right lower lobe pneumonia.\n"
    "IMPRESSION: Pneumonia. Left effusion, possibly loculated."
)


def _spy() -> tuple[list[TextCache | None], Pipeline]:
    seen: list[TextCache | None] = []
    decide = pipeline().decide_route
    assert decide is not None

    def spy(report: Report, findings: tuple[Finding, ...], context: QaContext) -> Route:
        seen.append(context.text_cache)
        return decide(report, findings, context)

    return seen, replace(pipeline(), decide_route=spy)


def test_check_report_shares_one_cache_between_qa_and_routing() -> None:
    seen, pipe = _spy()
    report = make_report(TEXT)
    outcome = check_report(report, pipe, QaContext(now=RECEIVED))
    assert outcome.route is not None
    [cache] = seen
    assert cache is not None
    assert cache.sentences and cache.mentions  # filled by the QA rules before routing


def test_every_report_gets_its_own_cache() -> None:
    seen, pipe = _spy()
    context = QaContext(now=RECEIVED)
    check_report(make_report(TEXT), pipe, context)
    check_report(make_report(TEXT), pipe, context)
    assert len(seen) == 2 and seen[0] is not None and seen[1] is not None
    assert seen[0] is not seen[1]
    assert context.text_cache is None  # the caller's context is left as it was


def test_the_callers_cache_is_used() -> None:
    seen, pipe = _spy()
    cache = TextCache()
    check_report(make_report(TEXT), pipe, QaContext(now=RECEIVED, text_cache=cache))
    assert seen == [cache]
    assert cache.mentions


def test_routing_facts_read_the_mentions_qa_found() -> None:
    pipe = pipeline()
    assert pipe.qa is not None
    report = make_report(TEXT)
    cache = TextCache()
    run_rules(report, pipe.qa, QaContext(now=RECEIVED, text_cache=cache))
    filled = {name: len(getattr(cache, name)) for name in ("sentences", "mentions", "sides", "modifiers")}
    zone = ZoneInfo("UTC")
    shared = Facts(report, (), RoutingContext(now=RECEIVED, text_cache=cache), pipe.qa.directory, pipe.qa.terms, zone)
    alone = Facts(report, (), RoutingContext(now=RECEIVED), pipe.qa.directory, pipe.qa.terms, zone)
    assert shared.mentions() == alone.mentions() != ()
    assert shared.hedging(SectionKind.IMPRESSION) == alone.hedging(SectionKind.IMPRESSION)
    # Nothing new was computed for routing: QA had found it all.
    assert {name: len(getattr(cache, name)) for name in filled} == filled


def test_a_context_with_a_cache_compares_equal_to_one_without() -> None:
    assert QaContext(now=RECEIVED, text_cache=TextCache()) == QaContext(now=RECEIVED)
    assert RoutingContext(now=RECEIVED, text_cache=TextCache()) == RoutingContext(now=RECEIVED)
