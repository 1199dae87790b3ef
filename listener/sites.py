"""Sites and readers (policies/sites.yaml, policies/readers.yaml) as frozen values.

Loaded at start-up and on reload; pure lookups afterwards. Shared by the QA
rules (compliance, turnaround, coding's professional-only sites) and by the
routing policy (contracts, coverage windows in site-local time, reader type).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from listener.model import PRIORITIES, Reader, Report
from listener.yamlconf import YamlMap, load_yaml

_STATE_RE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True, slots=True)
class Site:
    """A client site: where images are acquired and what its contract says."""

    code: str
    name: str
    state: str  # US state (2 letters) where images are acquired; "" if not in the US
    country: str
    timezone: ZoneInfo
    sending_facilities: tuple[str, ...]
    professional_only: bool
    turnaround_minutes: Mapping[str, int]  # priority -> preliminary turnaround target
    us_final_required: bool  # Medicare finals must be read in the US
    medicare_financial_classes: tuple[str, ...]
    client: str


@dataclass(frozen=True, slots=True)
class ReaderHistory:
    """A reader's recent peer-review record: reads reviewed and discrepancies found.

    The routing policy compares ``rate`` with a threshold once ``reads`` is
    large enough to mean something. It comes from readers.yaml (a snapshot the
    QA programme exports) or from the caller (``RoutingContext.reader_history``
    and ``group_history``: the daemon's live figures, :class:`LiveFigures`).
    """

    reads: int
    discrepancies: int
    as_of: str = ""  # when the snapshot was taken, as written (e.g. "2026-10-31")

    @property
    def rate(self) -> float:
        """Discrepancies per reviewed read (0.0 when nothing was reviewed)."""
        return self.discrepancies / self.reads if self.reads else 0.0


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """Peer-review figures the shell computed from the store, handed to routing as an input.

    Built off the reactor from the graded prelim/final pairs of a window
    (docs/routing.md, "Discrepancy rates: live figures and the readers.yaml
    fallback"); the pipeline passes them to the routing policy like the clock.

    Attributes:
        readers: reader id (upper case) -> graded reads and significant discrepancies.
        groups: readers.yaml group name -> the same over the group's readers.
        source: the window in words, for explanations ("store 90 d to 2026-12-06T10:00Z").
    """

    readers: Mapping[str, ReaderHistory]
    groups: Mapping[str, ReaderHistory]
    source: str


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    """What the group knows about a radiologist (no patient data)."""

    id: str
    type: str  # "internal" or "external"
    group: str
    country: str
    state: str
    licensed_states: tuple[str, ...]
    subspecialties: tuple[str, ...]
    history: ReaderHistory | None = None


@dataclass(frozen=True, slots=True)
class Directory:
    """All sites and readers, with the default turnaround targets."""

    sites: Mapping[str, Site]
    readers: Mapping[str, ReaderInfo]
    default_turnaround_minutes: Mapping[str, int]
    version: str = ""

    def site_for(self, report: Report) -> Site | None:
        """The site by code (report.site) or by a sending facility it lists."""
        site = self.sites.get(report.site.upper())
        if site is not None:
            return site
        facility = report.sender.facility.upper()
        for candidate in self.sites.values():
            if facility and facility in candidate.sending_facilities:
                return candidate
        return None

    def reader_info(self, reader: Reader | None) -> ReaderInfo | None:
        """The directory entry for the report's reader, matched by id, or None."""
        if reader is None:
            return None
        return self.readers.get(reader.id.upper())

    def turnaround_target(self, report: Report) -> int | None:
        """Minutes allowed for the preliminary report at this priority, or None."""
        site = self.site_for(report)
        targets = site.turnaround_minutes if site and site.turnaround_minutes else self.default_turnaround_minutes
        return targets.get(report.priority)


EMPTY_DIRECTORY = Directory(MappingProxyType({}), MappingProxyType({}), MappingProxyType({"stat": 30}))


def _strings(node: YamlMap, key: str) -> tuple[str, ...]:
    return tuple(s.upper() for s in node.get_list(key).strings()) if key in node else ()


def _turnaround(node: YamlMap, key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if key in node:
        sub = node.get_map(key)
        sub.reject_unknown(set(PRIORITIES), key)
        for prio in sub:
            out[prio] = int(sub.get_number(prio, minimum=1))
    return out


def _state(node: YamlMap, key: str) -> str:
    value = node.get_str(key, "").upper()
    if value and not _STATE_RE.match(value):
        raise node.error(key, f"{key!r} must be a two-letter code")
    return value


def load_sites(path: str | Path) -> tuple[dict[str, Site], dict[str, int]]:
    """Load sites.yaml: code -> Site, and the default turnaround targets."""
    doc = load_yaml(path)
    doc.reject_unknown({"version", "sites", "default_turnaround_minutes"})
    defaults = _turnaround(doc, "default_turnaround_minutes") or {"stat": 30}
    sites: dict[str, Site] = {}
    node = doc.get_map("sites")
    for code in node:
        s = node.get_map(code)
        s.reject_unknown(
            {
                "name",
                "state",
                "country",
                "timezone",
                "sending_facilities",
                "professional_only",
                "turnaround_minutes",
                "us_final_required",
                "medicare_financial_classes",
                "client",
            },
            f"sites.{code}",
        )
        tz_name = s.get_str("timezone", "UTC")
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise s.error(
                "timezone", f"unknown time zone {tz_name!r} (use an IANA name like America/Chicago)"
            ) from None
        sites[code.upper()] = Site(
            code=code.upper(),
            name=s.get_str("name", code),
            state=_state(s, "state"),
            country=s.get_str("country", "US").upper(),
            timezone=tz,
            sending_facilities=_strings(s, "sending_facilities") or (code.upper(),),
            professional_only=s.get_bool("professional_only", False),
            turnaround_minutes=MappingProxyType(_turnaround(s, "turnaround_minutes")),
            us_final_required=s.get_bool("us_final_required", False),
            medicare_financial_classes=_strings(s, "medicare_financial_classes") or ("MC", "MCR", "MEDICARE"),
            client=s.get_str("client", ""),
        )
    return sites, defaults


def _history(node: YamlMap, key: str) -> ReaderHistory | None:
    if key not in node:
        return None
    sub = node.get_map(key)
    sub.reject_unknown({"reads", "discrepancies", "as_of"}, key)
    reads = sub.get_number("reads", minimum=0)
    discrepancies = sub.get_number("discrepancies", minimum=0)
    for name, value in (("reads", reads), ("discrepancies", discrepancies)):
        if value != int(value):
            raise sub.error(name, f"{key}.{name} must be a whole number")
    if discrepancies > reads:
        raise sub.error("discrepancies", f"{key}: discrepancies cannot exceed reads")
    return ReaderHistory(int(reads), int(discrepancies), sub.get_str("as_of", ""))


def load_readers(path: str | Path) -> dict[str, ReaderInfo]:
    """Load readers.yaml: id -> ReaderInfo (ConfigError names file:line)."""
    doc = load_yaml(path)
    doc.reject_unknown({"version", "readers"})
    readers: dict[str, ReaderInfo] = {}
    node = doc.get_map("readers")
    for rid in node:
        r = node.get_map(rid)
        r.reject_unknown(
            {"type", "group", "country", "state", "licensed_states", "subspecialties", "peer_review"}, f"readers.{rid}"
        )
        licensed = _strings(r, "licensed_states")
        for i, state in enumerate(licensed):
            if not _STATE_RE.match(state):
                raise r.get_list("licensed_states").error(i, "licensed_states must be two-letter state codes")
        readers[rid.upper()] = ReaderInfo(
            id=rid.upper(),
            type=r.get_choice("type", ("internal", "external")),
            group=r.get_str("group", ""),
            country=r.get_str("country", "US").upper(),
            state=_state(r, "state"),
            licensed_states=licensed,
            subspecialties=tuple(s.lower() for s in _strings(r, "subspecialties")),
            history=_history(r, "peer_review"),
        )
    return readers


def load_directory(policies_dir: str | Path) -> Directory:
    """Load sites.yaml and readers.yaml from a policies directory (each optional)."""
    root = Path(policies_dir)
    sites: dict[str, Site] = {}
    defaults = {"stat": 30}
    readers: dict[str, ReaderInfo] = {}
    # The version is a hash of both files' bytes, so a routing decision records
    # which directory (reader types, time zones) it was made with.
    digest = hashlib.sha256()
    if (root / "sites.yaml").is_file():
        sites, defaults = load_sites(root / "sites.yaml")
        digest.update((root / "sites.yaml").read_bytes())
    digest.update(b"\0")
    if (root / "readers.yaml").is_file():
        readers = load_readers(root / "readers.yaml")
        digest.update((root / "readers.yaml").read_bytes())
    return Directory(
        MappingProxyType(sites), MappingProxyType(readers), MappingProxyType(defaults), digest.hexdigest()[:10]
    )
