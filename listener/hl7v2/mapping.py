"""Feed mappings: where each sender keeps each field, loaded from ``mappings/``.

A mapping (docs/hl7-input.md, "Mappings") says which HL7 locations hold the
accession, procedure, status and the rest of a Report, how to read their
values, and which OBX codes and headings start which report section; a feed
override (``mappings/feeds/*.yaml``) changes only what it names. The decoder
(:mod:`listener.hl7v2.decode`, :mod:`listener.fhir.decode`) reads messages with
them.

Reads YAML files once, at start-up or reload; everything it returns is a frozen
value, so the pure layers can share it between threads and a reload swaps it
atomically. Every error is a ConfigError naming file and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingT
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from listener.model import PRIORITIES, ResultStatus, SectionKind
from listener.text.sections import HeadingRules, compile_heading_rules
from listener.yamlconf import YamlList, YamlMap, load_yaml

_PATH_RE = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?$")

#: The keys of a mapping's `fields:` section, and what each feeds in the Report.
FIELD_KEYS = (
    "accession",
    "placer_order",
    "filler_order",
    "patient_id",
    "patient_id_authority",
    "patient_sex",
    "patient_birth_date",
    "procedure",
    "procedure_modifiers",
    "modality",
    "status",
    "priority",
    "observation_time",
    "report_time",
    "reader",
    "reason",
    "diagnosis_codes",
    "site",
    "financial_class",
)

_MAPPING_KEYS = frozenset(
    {
        "version",
        "match",
        "messages",
        "validation",
        "charset_fallback",
        "split_inline_segments",
        "fields",
        "cpt_coding_systems",
        "cpt_from_local_code",
        "local_codes",
        "status_values",
        "priority_values",
        "obx_sections",
        "obx_skip",
        "obx_skip_types",
        "peer_review_obx",
        "peer_review_fhir",
        "headings",
    }
)


@dataclass(frozen=True, slots=True)
class FieldPath:
    """One HL7 location: ``OBR-4.1`` is segment OBR, field 4, component 1."""

    segment: str
    field: int
    component: int = 0  # 0: the whole field
    subcomponent: int = 0

    def __str__(self) -> str:
        text = f"{self.segment}-{self.field}"
        if self.component:
            text += f".{self.component}"
        if self.subcomponent:
            text += f".{self.subcomponent}"
        return text


def parse_field_path(text: str) -> FieldPath:
    """Parse ``SEG-f[.c[.s]]``; raise ValueError when malformed."""
    match = _PATH_RE.match(text.strip())
    if not match:
        raise ValueError(text)
    seg, fld, comp, sub = match.groups()
    if int(fld) < 1 or (comp is not None and int(comp) < 1) or (sub is not None and int(sub) < 1):
        raise ValueError(text)
    return FieldPath(seg, int(fld), int(comp or 0), int(sub or 0))


@dataclass(frozen=True, slots=True)
class PeerReviewObx:
    """The OBX that carries an explicit RADPEER score: OBX-3 code, and its coding system ("" = any)."""

    code: str
    system: str = ""

    def matches(self, code: str, system: str) -> bool:
        return code == self.code and (not self.system or system == self.system)


#: The Observation.code of a posted peer-review score when the mapping names none (a local code:
#: LOINC has no code for a RADPEER grade).
DEFAULT_SCORE_CODE = ("http://overread.example/peer-review", "radpeer")


@dataclass(frozen=True, slots=True)
class PeerReviewFhir:
    """How a FHIR Observation or QuestionnaireResponse posted to the API carries a RADPEER score.

    ``codes``: the (system, code) pairs an Observation.code may carry (one of
    them); ``grade``, ``accession``, ``note``: the QuestionnaireResponse item
    linkIds (docs/outcomes.md, "Explicit scores").
    """

    codes: tuple[tuple[str, str], ...] = (DEFAULT_SCORE_CODE,)
    grade: str = "grade"
    accession: str = "accession"
    note: str = "note"


@dataclass(frozen=True, slots=True)
class FeedMatch:
    """Which senders a feed mapping applies to (empty tuple: any)."""

    sending_application: tuple[str, ...] = ()
    sending_facility: tuple[str, ...] = ()

    def matches(self, application: str, facility: str) -> bool:
        app_ok = not self.sending_application or application.upper() in self.sending_application
        fac_ok = not self.sending_facility or facility.upper() in self.sending_facility
        return app_ok and fac_ok

    @property
    def specificity(self) -> int:
        return bool(self.sending_application) + bool(self.sending_facility)


@dataclass(frozen=True, slots=True)
class Mapping:
    """Where one feed keeps each field, and how to read its values."""

    name: str
    source: str
    match: FeedMatch
    accept: tuple[str, ...]
    ignore: tuple[str, ...]
    validation: str
    charset_fallback: str
    split_inline_segments: tuple[str, ...]
    fields: MappingT[str, tuple[FieldPath, ...]]
    cpt_coding_systems: frozenset[str]
    cpt_from_local_code: re.Pattern[str] | None
    local_codes: MappingT[str, str]
    status_values: MappingT[str, ResultStatus]
    priority_values: MappingT[str, str]
    obx_sections: MappingT[str, str]  # code -> SectionKind value or "text"
    obx_skip: frozenset[str]
    obx_skip_types: frozenset[str]
    headings: MappingT[str, SectionKind]  # upper-case heading -> kind
    heading_rules: HeadingRules = field(compare=False)
    peer_review_obx: PeerReviewObx | None = None
    peer_review_fhir: PeerReviewFhir = PeerReviewFhir()
    #: Per needed segment, the field numbers the mapping reads (derived from ``fields``).
    read_fields: MappingT[str, frozenset[int]] = field(init=False, compare=False, repr=False)
    #: :func:`inline_split_pattern` for the field separator ``|`` (the one
    #: nearly every feed uses) and ``split_inline_segments``; None when there
    #: are none. A message with another separator compiles its own.
    inline_split: re.Pattern[str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        read: dict[str, set[int]] = {"MSH": set(range(1, 13)), "OBR": {2, 3, 4}, "ORC": {2, 3}}
        for paths in self.fields.values():
            for path in paths:
                read.setdefault(path.segment, set()).add(path.field)
        object.__setattr__(
            self, "read_fields", MappingProxyType({name: frozenset(nums) for name, nums in read.items()})
        )
        split = inline_split_pattern("|", self.split_inline_segments) if self.split_inline_segments else None
        object.__setattr__(self, "inline_split", split)


def inline_split_pattern(field_sep: str, names: tuple[str, ...]) -> re.Pattern[str]:
    """The pattern matching the space in "<field sep> <name><field sep>" for any of ``names``."""
    sep = re.escape(field_sep)
    alternation = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<={sep}) (?=(?:{alternation}){sep})")


@dataclass(frozen=True, slots=True)
class MappingSet:
    """The default mapping and every feed override; picks one per sender."""

    default: Mapping
    feeds: tuple[Mapping, ...] = ()

    def for_sender(self, application: str, facility: str) -> Mapping:
        """Return the most specific feed whose `match:` fits, else the default."""
        best: Mapping | None = None
        for feed in self.feeds:
            if feed.match.matches(application, facility) and (
                best is None or feed.match.specificity > best.match.specificity
            ):
                best = feed
        return best or self.default


def _strings(node: YamlMap, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    if key not in node:
        return default
    return node.get_list(key).strings()


def _field_paths(node: YamlList, key: str) -> tuple[FieldPath, ...]:
    out = []
    for i, text in enumerate(node.strings()):
        try:
            out.append(parse_field_path(text))
        except ValueError:
            raise node.error(i, f"fields.{key}: {text!r} is not an HL7 location like OBR-4.1") from None
    return tuple(out)


def _build_mapping(doc: YamlMap, name: str, base: Mapping | None) -> Mapping:
    doc.reject_unknown(_MAPPING_KEYS)
    if "version" in doc and doc.get("version") != 1:
        raise doc.error("version", "only mapping version 1 is known")

    def pick(key: str) -> bool:
        return key in doc or base is None

    match = FeedMatch()
    if "match" in doc:
        node = doc.get_map("match")
        node.reject_unknown({"sending_application", "sending_facility"}, "match")
        match = FeedMatch(
            tuple(s.upper() for s in _strings(node, "sending_application")),
            tuple(s.upper() for s in _strings(node, "sending_facility")),
        )
        if not match.specificity:
            raise doc.error("match", "match: needs sending_application and/or sending_facility")
    elif base is not None:
        raise doc.error(None, "a feed mapping needs a match: section")

    if pick("messages"):
        node = doc.get_map("messages")
        node.reject_unknown({"accept", "ignore"}, "messages")
        accept = tuple(s.upper() for s in _strings(node, "accept", ("ORU^R01",)))
        ignore = tuple(s.upper() for s in _strings(node, "ignore"))
        for kind in accept + ignore:
            if not re.fullmatch(r"[A-Z0-9]{3}(\^[A-Z0-9]{3})?", kind):
                raise node.error(
                    "accept" if kind in accept else "ignore", f"{kind!r} is not a message type like ORU^R01"
                )
    else:
        assert base is not None
        accept, ignore = base.accept, base.ignore

    validation = (
        doc.get_choice("validation", ("lenient", "strict"), "lenient") if pick("validation") else base.validation  # type: ignore[union-attr]
    )
    if pick("charset_fallback"):
        fallback = doc.get_str("charset_fallback", "cp1252")
        try:
            "".encode(fallback)
        except LookupError:
            raise doc.error("charset_fallback", f"unknown character set {fallback!r}") from None
    else:
        fallback = base.charset_fallback  # type: ignore[union-attr]
    inline = _strings(doc, "split_inline_segments", base.split_inline_segments if base else ())

    fields: dict[str, tuple[FieldPath, ...]] = dict(base.fields) if base else {}
    if "fields" in doc:
        node = doc.get_map("fields")
        node.reject_unknown(set(FIELD_KEYS), "fields")
        for key in node:
            fields[key] = _field_paths(node.get_list(key), key)
    missing = [k for k in FIELD_KEYS if k not in fields]
    if missing:
        raise doc.error("fields", f"fields: missing {', '.join(missing)}")

    cpt_systems = (
        frozenset(s.upper() for s in _strings(doc, "cpt_coding_systems"))
        if pick("cpt_coding_systems")
        else base.cpt_coding_systems  # type: ignore[union-attr]
    )
    if pick("cpt_from_local_code"):
        pattern_text = doc.get_str("cpt_from_local_code", "")
        try:
            cpt_pattern = re.compile(pattern_text) if pattern_text else None
        except re.error:
            raise doc.error("cpt_from_local_code", "not a valid regular expression") from None
        if cpt_pattern is not None and cpt_pattern.groups != 1:
            raise doc.error("cpt_from_local_code", "the pattern needs exactly one group (the CPT code)")
    else:
        cpt_pattern = base.cpt_from_local_code  # type: ignore[union-attr]

    local_codes = _str_map(doc, "local_codes", base.local_codes if base else {})
    for code, cpt in local_codes.items():
        if not re.fullmatch(r"\d{4}[0-9A-Z]", cpt):
            raise doc.get_map("local_codes").error(code, f"local_codes: {cpt!r} is not a CPT code")

    status_values: dict[str, ResultStatus] = dict(base.status_values) if base else {}
    if "status_values" in doc:
        node = doc.get_map("status_values")
        for key in node:
            value = node.get_str(key)
            try:
                status_values[key.upper()] = ResultStatus(value)
            except ValueError:
                raise node.error(
                    key, f"status_values: {value!r} is not one of {', '.join(s.value for s in ResultStatus)}"
                ) from None

    priority_values: dict[str, str] = dict(base.priority_values) if base else {}
    if "priority_values" in doc:
        node = doc.get_map("priority_values")
        for key in node:
            priority_values[key.upper()] = node.get_choice(key, PRIORITIES)

    kinds = tuple(k.value for k in SectionKind)
    obx_sections: dict[str, str] = dict(base.obx_sections) if base else {}
    if "obx_sections" in doc:
        node = doc.get_map("obx_sections")
        for key in node:
            obx_sections[key.upper()] = node.get_choice(key, kinds + ("text",))

    obx_skip = frozenset(s.upper() for s in _strings(doc, "obx_skip")) if pick("obx_skip") else base.obx_skip  # type: ignore[union-attr]
    skip_types = (
        frozenset(s.upper() for s in _strings(doc, "obx_skip_types")) if pick("obx_skip_types") else base.obx_skip_types  # type: ignore[union-attr]
    )

    peer_review = base.peer_review_obx if base else None
    if "peer_review_obx" in doc:
        if doc.get("peer_review_obx") is None:
            peer_review = None
        else:
            node = doc.get_map("peer_review_obx")
            node.reject_unknown({"code", "system"}, "peer_review_obx")
            code = node.get_str("code", "").strip().upper()
            if not code:
                raise node.error("code", "peer_review_obx: code is needed (the OBX-3 identifier)")
            peer_review = PeerReviewObx(code, node.get_str("system", "").strip().upper())

    peer_review_fhir = _peer_review_fhir(doc, base.peer_review_fhir if base else PeerReviewFhir())

    headings: dict[str, SectionKind] = dict(base.headings) if base else {}
    if "headings" in doc:
        node = doc.get_map("headings")
        for key in node:
            try:
                kind = SectionKind(key)
            except ValueError:
                raise node.error(key, f"headings: {key!r} is not a section ({', '.join(kinds)})") from None
            for word in node.get_list(key).strings():
                headings[" ".join(word.upper().split())] = kind
    if not headings:
        raise doc.error("headings", "headings: at least one heading is needed")

    return Mapping(
        name=name,
        source=doc.path,
        match=match,
        accept=accept,
        ignore=ignore,
        validation=validation,
        charset_fallback=fallback,
        split_inline_segments=tuple(s.upper() for s in inline),
        fields=MappingProxyType(fields),
        cpt_coding_systems=cpt_systems,
        cpt_from_local_code=cpt_pattern,
        local_codes=MappingProxyType(local_codes),
        status_values=MappingProxyType(status_values),
        priority_values=MappingProxyType(priority_values),
        obx_sections=MappingProxyType(obx_sections),
        obx_skip=obx_skip,
        obx_skip_types=skip_types,
        headings=MappingProxyType(headings),
        heading_rules=compile_heading_rules(headings),
        peer_review_obx=peer_review,
        peer_review_fhir=peer_review_fhir,
    )


def _peer_review_fhir(doc: YamlMap, base: PeerReviewFhir) -> PeerReviewFhir:
    """``peer_review_fhir: {codes: [SYSTEM|CODE, ...], link_ids: {grade:, accession:, note:}}``; what it omits is the base's."""
    if "peer_review_fhir" not in doc:
        return base
    node = doc.get_map("peer_review_fhir")
    node.reject_unknown({"codes", "link_ids"}, "peer_review_fhir")
    codes = base.codes
    if "codes" in node:
        items = node.get_list("codes")
        found = []
        for i, text in enumerate(items.strings()):
            system, bar, code = text.strip().rpartition("|")
            if not bar or not system.strip() or not code.strip():
                raise items.error(i, "peer_review_fhir.codes: each is SYSTEM|CODE (the Observation.code coding)")
            found.append((system.strip(), code.strip()))
        if not found:
            raise node.error("codes", "peer_review_fhir.codes: at least one SYSTEM|CODE is needed")
        codes = tuple(found)
    links = {"grade": base.grade, "accession": base.accession, "note": base.note}
    if "link_ids" in node:
        ids = node.get_map("link_ids")
        ids.reject_unknown(set(links), "peer_review_fhir.link_ids")
        for key in links:
            if key in ids:
                value = ids.get_str(key).strip()
                if not value:
                    raise ids.error(key, f"peer_review_fhir.link_ids.{key}: a linkId is needed")
                links[key] = value
    if len(set(links.values())) != len(links):
        raise node.error("link_ids", "peer_review_fhir.link_ids: grade, accession and note need three linkIds")
    return PeerReviewFhir(codes, links["grade"], links["accession"], links["note"])


def _str_map(doc: YamlMap, key: str, base: MappingT[str, str]) -> dict[str, str]:
    out = dict(base)
    if key in doc:
        node = doc.get_map(key)
        for k in node:
            out[k.upper()] = node.get_str(k)
    return out


def load_mappings(directory: str | Path) -> MappingSet:
    """Load ``default.yaml`` and every ``feeds/*.yaml`` from a mappings directory.

    Raises:
        ConfigError: naming the file and line of the first problem found.
    """
    root = Path(directory)
    default = _build_mapping(load_yaml(root / "default.yaml"), "default", None)
    feeds = []
    for path in sorted((root / "feeds").glob("*.yaml")):
        feeds.append(_build_mapping(load_yaml(path), path.stem, default))
    return MappingSet(default=default, feeds=tuple(feeds))
