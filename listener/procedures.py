"""The CPT procedure table (mappings/procedures.yaml) as frozen values.

Loaded once at start-up or reload; pure lookups afterwards. Used by the
decoders (modality, body region, order laterality) and by the coding rules
(contrast families, screening/diagnostic mammography, add-ons, 76140).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from listener.yamlconf import YamlMap, load_yaml

CONTRASTS = ("none", "without", "with", "without_then_with")
LATERALITIES = ("none", "required", "bilateral", "unilateral")
MODALITIES = ("CT", "MR", "US", "XR", "MG", "NM", "PT", "FL", "DXA", "IR", "OTHER")

_ENTRY_KEYS = frozenset(
    {
        "description",
        "modality",
        "body_region",
        "contrast",
        "laterality",
        "family",
        "mammo",
        "tomosynthesis_addon_for",
        "addon",
        "consultation",
        "views",
        "view_family",
        "system",
        "limited",
        "screening",
        "angiography",
        "enteric_contrast",
        "obstetric",
        "vascular",
    }
)
_FLAGS = ("addon", "consultation", "limited", "screening", "angiography", "enteric_contrast", "obstetric", "vascular")

# Procedure-text keywords -> modality, when neither the CPT table nor the
# sender's modality field says (order matters: "PET/CT" is PT, "CT" is CT).
_TEXT_MODALITY = (
    (re.compile(r"\bPET\b", re.I), "PT"),
    (re.compile(r"\bMAMMO|\bMAMMOGRA|\bTOMOSYNTH", re.I), "MG"),
    (re.compile(r"\bDEXA\b|\bDXA\b|BONE DENSIT", re.I), "DXA"),
    (re.compile(r"\bCTA?\b|\bCOMPUTED TOMOGRAPHY\b", re.I), "CT"),
    (re.compile(r"\bMRI?\b|\bMRA\b|MAGNETIC RESONANCE", re.I), "MR"),
    (re.compile(r"\bUS\b|ULTRASOUND|SONOGRA|DOPPLER", re.I), "US"),
    (re.compile(r"\bNM\b|NUCLEAR|SPECT|SCINTIG", re.I), "NM"),
    (re.compile(r"FLUORO|BARIUM|SWALLOW|ESOPHAGRAM|UPPER GI", re.I), "FL"),
    (re.compile(r"\bXR\b|X-RAY|XRAY|RADIOGRA|\bCXR\b|\bVIEWS?\b", re.I), "XR"),
)


@dataclass(frozen=True, slots=True)
class ProcedureEntry:
    """One CPT code's facts."""

    code: str
    description: str
    modality: str
    body_region: str
    contrast: str = "none"
    laterality: str = "none"
    family: str = ""
    mammo: str = ""  # "screening" or "diagnostic" for mammography codes
    tomosynthesis_addon_for: tuple[str, ...] = ()
    addon: bool = False
    consultation: bool = False
    views: tuple[int, int | None] | None = None  # (min, max); max None = "or more"
    view_family: str = ""  # radiograph codes of one anatomy that differ only by view count
    system: str = "CPT"
    limited: bool = False
    screening: bool = False
    angiography: bool = False
    enteric_contrast: bool = False
    obstetric: bool = False
    vascular: bool = False


@dataclass(frozen=True, slots=True)
class ProcedureTable:
    """Every known code, contrast families and modality aliases."""

    entries: Mapping[str, ProcedureEntry]
    families: Mapping[str, Mapping[str, str]]  # family -> contrast -> code
    modality_aliases: Mapping[str, str]
    source: str = ""
    #: view family -> its codes, fewest views first (coding.view_count_mismatch, docs/qa-rules.md)
    view_families: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, code: str) -> ProcedureEntry | None:
        return self.entries.get(code.strip().upper())

    def family_code(self, family: str, contrast: str) -> str | None:
        """The code of ``family`` for ``contrast`` (for "bill X instead" hints)."""
        return self.families.get(family, {}).get(contrast)

    def view_codes(self, family: str, views: int) -> tuple[str, ...]:
        """The codes of view family ``family`` whose view range holds ``views`` (for "bill X instead" hints)."""
        out: list[str] = []
        for code in self.view_families.get(family, ()):
            entry = self.entries[code]
            if entry.views is not None and views_in_range(views, entry.views):
                out.append(code)
        return tuple(out)

    def modality_for(self, raw: str, procedure_text: str = "") -> str:
        """Modality from the sender's field (OBR-24 / DICOM code) or procedure text."""
        alias = self.modality_aliases.get(raw.strip().upper())
        if alias:
            return alias
        for pattern, modality in _TEXT_MODALITY:
            if pattern.search(procedure_text):
                return modality
        return ""


def views_in_range(views: int, bounds: tuple[int, int | None]) -> bool:
    """True when ``views`` lies in ``bounds`` ((min, max), max None = "or more")."""
    low, high = bounds
    return views >= low and (high is None or views <= high)


def _entry(code: str, node: YamlMap) -> ProcedureEntry:
    node.reject_unknown(_ENTRY_KEYS, f"procedures.{code}")
    modality = node.get_choice("modality", MODALITIES)
    views: tuple[int, int | None] | None = None
    if "views" in node:
        raw = node.get("views")
        if not (isinstance(raw, list) and len(raw) == 2):
            raise node.error("views", "views must be [min, max] with max null for 'or more'")
        low, high = raw[0], raw[1]
        if not isinstance(low, int) or low < 1 or not (high is None or (isinstance(high, int) and high >= low)):
            raise node.error("views", "views must be [min, max] with max null for 'or more'")
        views = (low, high)
    flags = {flag: node.get_bool(flag, False) for flag in _FLAGS}
    mammo = node.get_choice("mammo", ("", "screening", "diagnostic"), "")
    return ProcedureEntry(
        code=code,
        description=node.get_str("description"),
        modality=modality,
        body_region=node.get_str("body_region"),
        contrast=node.get_choice("contrast", CONTRASTS, "none"),
        laterality=node.get_choice("laterality", LATERALITIES, "none"),
        family=node.get_str("family", ""),
        mammo=mammo,
        tomosynthesis_addon_for=tuple(str(c) for c in node.get_list("tomosynthesis_addon_for").strings()),
        views=views,
        view_family=node.get_str("view_family", ""),
        system=node.get_choice("system", ("CPT", "HCPCS"), "CPT"),
        **flags,
    )


def load_procedures(path: str | Path) -> ProcedureTable:
    """Load and cross-check the CPT table; ConfigError names file:line."""
    doc = load_yaml(path)
    doc.reject_unknown({"version", "procedures", "families", "modality_aliases"})
    node = doc.get_map("procedures", required=True)
    entries: dict[str, ProcedureEntry] = {}
    for code in node:
        if not re.fullmatch(r"[0-9A-Z]\d{3}[0-9A-Z]", code):
            raise node.error(code, f"{code!r} is not a CPT code")
        entries[code] = _entry(code, node.get_map(code))
    families: dict[str, dict[str, str]] = {}
    fam_node = doc.get_map("families")
    for family in fam_node:
        members = fam_node.get_map(family)
        families[family] = {}
        for contrast in members:
            if contrast not in CONTRASTS:
                raise members.error(contrast, f"families.{family}: {contrast!r} is not one of {', '.join(CONTRASTS)}")
            member = members.get_str(contrast)
            entry = entries.get(member)
            if entry is None:
                raise members.error(contrast, f"families.{family}: code {member} is not in procedures")
            if entry.contrast != contrast:
                raise members.error(contrast, f"families.{family}: code {member} has contrast {entry.contrast!r}")
            families[family][contrast] = member
    for entry in entries.values():
        if entry.family and entry.family not in families:
            raise node.get_map(entry.code).error("family", f"family {entry.family!r} is not listed under families")
        for base in entry.tomosynthesis_addon_for:
            if base not in entries:
                raise node.get_map(entry.code).error("tomosynthesis_addon_for", f"code {base} is not in procedures")
    view_families: dict[str, list[str]] = {}
    for entry in entries.values():
        if entry.view_family:
            if entry.views is None:
                raise node.get_map(entry.code).error("view_family", f"code {entry.code} has a view_family but no views")
            view_families.setdefault(entry.view_family, []).append(entry.code)
    aliases: dict[str, str] = {}
    alias_node = doc.get_map("modality_aliases")
    for key in alias_node:
        if alias_node.get(key) is not None:  # null: generic radiology, the code decides
            aliases[key.upper()] = alias_node.get_choice(key, MODALITIES)
    return ProcedureTable(
        entries=MappingProxyType(entries),
        families=MappingProxyType({k: MappingProxyType(v) for k, v in families.items()}),
        modality_aliases=MappingProxyType(aliases),
        source=str(path),
        view_families=MappingProxyType(
            {
                family: tuple(sorted(codes, key=lambda c: (_views_of(entries[c]), c)))
                for family, codes in view_families.items()
            }
        ),
    )


def _views_of(entry: ProcedureEntry) -> tuple[int, int]:
    low, high = entry.views or (0, None)
    return low, high if high is not None else 1_000
