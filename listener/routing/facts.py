"""What the routing conditions look at, computed once per report.

Pure: no I/O, no clock (``RoutingContext.now`` is passed in), no logging.
:class:`Facts` resolves the report against the directory (site, client,
reader type, time zone) and computes the text measures (affirmed critical
mentions, hedge density) lazily, so ten rules asking for the same thing cost
one computation and a rule nobody wrote costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo

from listener.model import Finding, Report, SectionKind
from listener.sites import Directory, ReaderHistory, ReaderInfo, Site
from listener.text import Mention, Terms, TextCache, find_mentions, hedge_count, split_sentences

__all__ = ["BODY_SECTIONS", "Facts", "RoutingContext", "TIME_SOURCES"]

#: Sections that describe the patient now (history and technique are left out).
BODY_SECTIONS = (SectionKind.FINDINGS, SectionKind.IMPRESSION, SectionKind.OTHER, SectionKind.ADDENDUM)

#: Which of the report's times a coverage window reads (see :meth:`Facts.event_time`).
TIME_SOURCES = ("message", "received", "report", "observation")


@dataclass(frozen=True, slots=True)
class RoutingContext:
    """What the caller knows beyond the report: the clock and the live peer-review figures.

    Attributes:
        now: the decision time (aware); deadlines count from it and it is the
            last fallback for a coverage window when the report has no time.
        reader_history: reader id (upper case) -> graded reads and significant
            discrepancies over a recent window (the daemon computes them from
            the store, docs/routing.md). Empty: readers.yaml only.
        group_history: readers.yaml group name -> the same for the group.
        history_source: those figures' origin and window in words, quoted in
            explanations ("store 90 d to 2026-12-06T10:00Z"); "" with figures
            given: "figures passed in".
        text_cache: the report's text analysis results, shared with its QA
            run (:func:`listener.pipeline.check_report` creates one per
            report); None: :class:`Facts` starts an empty one of its own.
    """

    now: datetime
    reader_history: Mapping[str, ReaderHistory] = field(default_factory=lambda: MappingProxyType({}))
    group_history: Mapping[str, ReaderHistory] = field(default_factory=lambda: MappingProxyType({}))
    history_source: str = ""
    text_cache: TextCache | None = field(default=None, compare=False, repr=False)


class Facts:
    """The report seen through the directory and the vocabularies, computed on demand."""

    def __init__(
        self,
        report: Report,
        findings: tuple[Finding, ...],
        context: RoutingContext,
        directory: Directory,
        terms: Terms | None,
        default_timezone: ZoneInfo,
    ) -> None:
        self.report = report
        self.findings = findings
        self.context = context
        self.directory = directory
        self.terms = terms
        self.default_timezone = default_timezone
        self.site: Site | None = directory.site_for(report)
        self.reader_info: ReaderInfo | None = directory.reader_info(report.reader)
        self._mentions: tuple[Mention, ...] | None = None
        self._hedges: dict[SectionKind, tuple[int, int]] = {}
        self._text_cache = context.text_cache if context.text_cache is not None else TextCache()

    # -- who and where ------------------------------------------------------

    @property
    def site_code(self) -> str:
        """The directory's code for the site, or the raw site field when unknown."""
        return self.site.code if self.site is not None else self.report.site.upper()

    @property
    def client(self) -> str:
        """The site's client (contract holder), "" when unknown."""
        return self.site.client if self.site is not None else ""

    @property
    def reader_id(self) -> str:
        """The reader's id, upper case, "" when the report names none."""
        return self.report.reader.id.upper() if self.report.reader is not None else ""

    @property
    def reader_type(self) -> tuple[str, str]:
        """(type, where it came from): readers.yaml wins over the feed's own claim."""
        if self.reader_info is not None:
            return self.reader_info.type, "readers.yaml"
        if self.report.reader is not None and self.report.reader.type in ("internal", "external"):
            return self.report.reader.type, "the feed"
        return "unknown", "not in readers.yaml"

    @property
    def subspecialties(self) -> tuple[str, ...]:
        """The reader's subspecialties from readers.yaml (empty when unknown)."""
        return self.reader_info.subspecialties if self.reader_info is not None else ()

    @property
    def group(self) -> str:
        """The reader's group from readers.yaml, "" when the reader is not listed or has none."""
        return self.reader_info.group if self.reader_info is not None else ""

    @property
    def live_source(self) -> str:
        """Where the live figures come from, "" when the caller passed none."""
        context = self.context
        if context.history_source:
            return context.history_source
        return "figures passed in" if context.reader_history or context.group_history else ""

    def live_reader(self) -> ReaderHistory | None:
        """The reader's live figures (None: none passed for this reader)."""
        rid = self.reader_id
        return self.context.reader_history.get(rid) if rid else None

    def live_group(self) -> ReaderHistory | None:
        """The reader's group's live figures (None: none passed for that group)."""
        group = self.group
        return self.context.group_history.get(group) if group else None

    def snapshot_reader(self) -> ReaderHistory | None:
        """The reader's ``peer_review`` snapshot in readers.yaml, if any."""
        return self.reader_info.history if self.reader_info is not None else None

    # -- time ---------------------------------------------------------------

    @property
    def timezone(self) -> tuple[tzinfo, str]:
        """(the site's zone, its name) or the policy's default zone."""
        if self.site is not None:
            return self.site.timezone, f"{self.site.code} {self.site.timezone.key}"
        return self.default_timezone, f"default {self.default_timezone.key} (site unknown)"

    def event_time(self, source: str) -> tuple[datetime, str]:
        """The report's ``source`` time, falling back message -> report -> received -> now.

        Returns the time in site-local wall-clock terms and the name of the time
        used. A naive time is the sender's local time (docs/routing.md): its wall clock
        is taken as is. An aware time is converted with the site's zoneinfo, so
        DST is right on both change nights.
        """
        times = self.report.times
        candidates = {
            "message": times.message,
            "received": times.received,
            "report": times.report,
            "observation": times.observation,
        }
        order = [source] + [s for s in ("message", "report", "received") if s != source]
        zone, _ = self.timezone
        for name in order:
            value = candidates.get(name)
            if value is not None:
                return _local(value, zone), name
        return _local(self.context.now, zone), "decision time"

    @property
    def exam_date(self) -> date:
        """The date the study was done (observation, else report, else now)."""
        times = self.report.times
        when = times.observation or times.report or times.message or self.context.now
        return when.date()

    def age_years(self) -> int | None:
        """The patient's age in whole years on the exam date, None if the birth date is unknown."""
        born = self.report.patient.birth_date
        if born is None:
            return None
        on = self.exam_date
        years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
        return max(years, 0)

    # -- text ---------------------------------------------------------------

    def mentions(self) -> tuple[Mention, ...]:
        """Concept mentions in the body sections (the whole text when unsectioned)."""
        if self._mentions is None:
            if self.terms is None:
                self._mentions = ()
            else:
                text = self.report.text
                regions = [(s.start, s.end) for s in self.report.sections if s.kind in BODY_SECTIONS]
                if not self.report.sections and text.strip():
                    regions = [(0, len(text))]
                found: list[Mention] = []
                for start, end in regions:
                    found.extend(find_mentions(text, start, end, self.terms, cache=self._text_cache))
                self._mentions = tuple(found)
        return self._mentions

    def affirmed_critical(self) -> tuple[Mention, ...]:
        """Critical concepts stated as present now in this patient."""
        return tuple(m for m in self.mentions() if m.critical and m.affirmed)

    def hedging(self, kind: SectionKind) -> tuple[int, int]:
        """(hedging phrases, sentences) over every section of ``kind``."""
        if kind not in self._hedges:
            hedges = sentences = 0
            if self.terms is not None:
                for sec in self.report.sections_of(kind):
                    text, cache = self.report.text, self._text_cache
                    sentences += len(split_sentences(text, sec.start, sec.end, cache=cache))
                    hedges += hedge_count(text, sec.start, sec.end, self.terms, cache=cache)
            self._hedges[kind] = (hedges, sentences)
        return self._hedges[kind]


def _local(value: datetime, zone: tzinfo) -> datetime:
    # Strategy: aware -> convert (zoneinfo applies the offset in force at that
    # instant); naive -> already the sender's wall clock, keep it.
    if value.tzinfo is None:
        return value
    return value.astimezone(zone)
