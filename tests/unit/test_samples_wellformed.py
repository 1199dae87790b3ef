"""The sample messages and the procedure table are well formed and agree with each other.

Pure: reads files under samples/ and mappings/ only. These checks guard the fixtures that the
decoder, QA and routing tests build on, so a broken sample fails here, with its file name, rather
than as a puzzling decode error elsewhere.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import hl7
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = ROOT / "samples" / "hl7"
SAMPLES_README = ROOT / "samples" / "README.md"
PROCEDURES = ROOT / "mappings" / "procedures.yaml"

SAMPLE_PATHS = sorted(SAMPLES_DIR.glob("*.hl7"))

MODALITIES = {"CT", "MR", "US", "XR", "MG", "NM", "PT", "FL", "DXA"}
CONTRASTS = {"none", "without", "with", "without_then_with"}
LATERALITIES = {"none", "required", "bilateral", "unilateral"}
FAMILY_KEYS = {"without", "with", "without_then_with"}
BUCKETS = {"always_final", "selective_overread", "process_check", "release"}
REQUIRED_KEYS = {"description", "modality", "body_region", "contrast", "laterality"}
OPTIONAL_KEYS = {
    "system",
    "family",
    "mammo",
    "tomosynthesis_addon_for",
    "addon",
    "consultation",
    "views",
    "view_family",
    "limited",
    "screening",
    "angiography",
    "enteric_contrast",
    "obstetric",
    "vascular",
}
BOOLEAN_FLAGS = {
    "addon",
    "consultation",
    "limited",
    "screening",
    "angiography",
    "enteric_contrast",
    "obstetric",
    "vascular",
}


def _raw(path: Path) -> str:
    # read_bytes, not read_text: universal newlines would turn the CR separators into LF.
    return path.read_bytes().decode("ascii")


@cache
def _parse(path: Path) -> hl7.Message:
    return hl7.parse(_raw(path))


def _field(segment: hl7.Segment, index: int) -> str:
    """Field `index` of a python-hl7 segment as its raw text ('' when absent).

    python-hl7 numbers MSH like the standard (MSH-1 is the field separator), so
    `_field(msh, 9)` is MSH-9 for every segment type.
    """
    return str(segment[index]) if len(segment) > index else ""


def _obr_segments(message: hl7.Message) -> list[hl7.Segment]:
    return [segment for segment in message if str(segment[0]) == "OBR"]


@lru_cache(maxsize=1)
def _procedures() -> dict[str, Any]:
    """The loaded procedure table, read once per session (tests only read it)."""
    with PROCEDURES.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    assert isinstance(loaded, dict)
    return loaded


def _readme_rows() -> dict[str, list[str]]:
    """Map each sample file named in the README table to its cells (escaped pipes kept)."""
    rows: dict[str, list[str]] = {}
    for line in SAMPLES_README.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        match = re.fullmatch(r"`([^`]+\.hl7)`", cells[0])
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} listed twice in README"
            rows[match.group(1)] = cells
    return rows


def _sample_id(path: Path) -> str:
    return path.name


def test_enough_samples() -> None:
    """At least 14 samples exist (the foundation issue asks for 12; our scenario list has more)."""
    assert len(SAMPLE_PATHS) >= 14


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=_sample_id)
def test_sample_bytes_are_cr_separated_without_framing(path: Path) -> None:
    """Each sample is ASCII, CR-separated, ends with CR, and has no LF or MLLP framing bytes."""
    data = path.read_bytes()
    data.decode("ascii")
    assert data.startswith(b"MSH|^~\\&|")
    assert data.endswith(b"\r")
    assert b"\n" not in data
    assert b"\x0b" not in data and b"\x1c" not in data


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=_sample_id)
def test_sample_parses_as_oru_r01(path: Path) -> None:
    """python-hl7 parses each sample and MSH-9 is ORU^R01 (with or without the structure id)."""
    message = _parse(path)
    msh = message.segment("MSH")
    assert _field(msh, 9).split("^")[:2] == ["ORU", "R01"]
    assert _field(msh, 12) in {"2.3", "2.5.1"}
    assert _field(message.segment("PID"), 3), "PID-3 (MRN) is empty"
    assert _obr_segments(message), "no OBR segment"
    assert [s for s in message if str(s[0]) == "OBX"], "no OBX segment"


def test_message_control_ids_are_unique() -> None:
    """MSH-10 differs across all samples, so a store deduplicating on it keeps every one."""
    ids = Counter(_field(_parse(path).segment("MSH"), 10) for path in SAMPLE_PATHS)
    assert "" not in ids
    assert [control_id for control_id, n in ids.items() if n > 1] == []


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=_sample_id)
def test_obr4_code_is_a_known_cpt_code(path: Path) -> None:
    """Every OBR-4 is `code^text^C4` and the code is in mappings/procedures.yaml."""
    procedures = _procedures()["procedures"]
    for obr in _obr_segments(_parse(path)):
        code, text, system = (_field(obr, 4).split("^") + ["", "", ""])[:3]
        assert system == "C4", f"OBR-4 coding system is {system!r}, expected C4 (CPT-4)"
        assert text, "OBR-4 has no text"
        assert code in procedures, f"OBR-4 code {code} is not in procedures.yaml"


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=_sample_id)
def test_modifiers_and_side_agree_with_procedure_laterality(path: Path) -> None:
    """OBR-45 RT/LT appears exactly when the code's laterality needs a side."""
    procedures = _procedures()["procedures"]
    for obr in _obr_segments(_parse(path)):
        entry = procedures[_field(obr, 4).split("^")[0]]
        modifiers = {rep.split("^")[0] for rep in _field(obr, 45).split("~") if rep}
        sides = modifiers & {"RT", "LT", "50"}
        if entry["laterality"] in {"required", "unilateral"}:
            assert len(sides) == 1, f"laterality {entry['laterality']} but modifiers {modifiers}"
        else:
            assert not sides, f"laterality {entry['laterality']} but modifiers {modifiers}"


def test_required_scenarios_are_present() -> None:
    """The scenarios the foundation issue names are all covered by at least one sample."""
    versions, statuses, codes, senders = set(), set(), set(), set()
    left_knee_mri = False
    for path in SAMPLE_PATHS:
        message = _parse(path)
        msh = message.segment("MSH")
        versions.add(_field(msh, 12))
        senders.add(_field(msh, 3))
        for obr in _obr_segments(message):
            code = _field(obr, 4).split("^")[0]
            codes.add(code)
            statuses.add(_field(obr, 25))
            if code == "73721" and "LT^" in _field(obr, 45):
                left_knee_mri = True
    assert {"2.3", "2.5.1"} <= versions
    assert {"P", "F", "C"} <= statuses
    assert {"70450", "71046", "73721", "77067", "77080", "76700", "74177", "76140"} <= codes
    assert left_knee_mri
    assert "NOCTURNA_RAD" in senders
    assert any("\\.br\\" in _raw(path) and "\\X0D\\" in _raw(path) for path in SAMPLE_PATHS)


def test_every_sample_is_in_readme_and_every_row_is_a_sample() -> None:
    """samples/README.md lists exactly the files in samples/hl7, no more and no fewer."""
    listed = set(_readme_rows())
    present = {path.name for path in SAMPLE_PATHS}
    assert sorted(present - listed) == [], "samples missing from README"
    assert sorted(listed - present) == [], "README rows naming missing files"


def test_readme_rows_name_a_routing_bucket() -> None:
    """Each README row has five cells and its last starts with one bucket from docs/routing.md."""
    for name, cells in _readme_rows().items():
        assert len(cells) == 5, f"{name}: expected 5 cells, got {len(cells)}"
        match = re.match(r"`(\w+)` — \S", cells[4])
        assert match, f"{name}: bucket cell must look like '`bucket` — reason'"
        assert match.group(1) in BUCKETS, f"{name}: unknown bucket {match.group(1)}"


def test_procedures_yaml_loads_with_expected_sections() -> None:
    """procedures.yaml loads with yaml.safe_load and has exactly the documented top-level keys."""
    data = _procedures()
    assert set(data) == {"version", "procedures", "families", "modality_aliases"}
    assert data["version"] == 1


def test_procedure_entries_follow_the_schema() -> None:
    """Every entry has string code keys, the required fields, and only known values and flags."""
    for code, entry in _procedures()["procedures"].items():
        assert isinstance(code, str) and re.fullmatch(r"\d{5}|[A-Z]\d{4}", code), code
        assert set(entry) >= REQUIRED_KEYS, f"{code}: missing {REQUIRED_KEYS - set(entry)}"
        assert set(entry) <= REQUIRED_KEYS | OPTIONAL_KEYS, f"{code}: unknown keys"
        assert entry["modality"] in MODALITIES, code
        assert entry["contrast"] in CONTRASTS, code
        assert entry["laterality"] in LATERALITIES, code
        assert isinstance(entry["body_region"], str) and entry["body_region"], code
        assert entry.get("system", "CPT") in {"CPT", "HCPCS"}, code
        for flag in BOOLEAN_FLAGS & set(entry):
            assert entry[flag] is True, f"{code}: flag {flag} should be true or absent"
        if "mammo" in entry:
            assert entry["mammo"] in {"screening", "diagnostic"}, code
            assert entry["modality"] == "MG", code
        if "views" in entry:
            low, high = entry["views"]
            assert isinstance(low, int) and low >= 1, code
            assert high is None or (isinstance(high, int) and high >= low), code


def test_cross_references_in_procedures_resolve() -> None:
    """Tomosynthesis add-ons point at existing mammography codes of the same kind."""
    procedures = _procedures()["procedures"]
    for code, entry in procedures.items():
        for primary in entry.get("tomosynthesis_addon_for", []):
            assert primary in procedures, f"{code} -> {primary}"
            assert procedures[primary].get("mammo") == entry.get("mammo"), f"{code} -> {primary}"


def test_family_members_exist_with_consistent_contrast() -> None:
    """Each family maps contrast -> an existing code whose own contrast and family agree."""
    data = _procedures()
    procedures, families = data["procedures"], data["families"]
    for family, members in families.items():
        assert members and set(members) <= FAMILY_KEYS, family
        assert len(members) >= 2, f"{family}: a family needs codes that differ by contrast"
        for contrast, code in members.items():
            assert code in procedures, f"{family}.{contrast} -> {code} missing"
            assert procedures[code]["contrast"] == contrast, f"{family}.{contrast} -> {code}"
            assert procedures[code].get("family") == family, f"{code} not marked {family}"
        shared = {
            (procedures[c]["modality"], procedures[c]["body_region"], procedures[c]["laterality"])
            for c in members.values()
        }
        assert len(shared) == 1, f"{family}: members differ by more than contrast"
    for code, entry in procedures.items():
        if "family" in entry:
            assert families.get(entry["family"], {}).get(entry["contrast"]) == code, code


def test_modality_aliases_map_to_our_modalities() -> None:
    """Every alias is upper-case and maps to one of our modalities or null (generic section)."""
    aliases = _procedures()["modality_aliases"]
    for needed in ("CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "RF", "XA", "RAD", "IMG"):
        assert needed in aliases, needed
    for alias, modality in aliases.items():
        assert alias == alias.upper(), alias
        assert modality is None or modality in MODALITIES, alias


@pytest.mark.parametrize("path", SAMPLE_PATHS, ids=_sample_id)
def test_obr24_is_a_known_modality_alias(path: Path) -> None:
    """Each sample's OBR-24 resolves through modality_aliases, to the code's modality if not null."""
    data = _procedures()
    for obr in _obr_segments(_parse(path)):
        section = _field(obr, 24).upper()
        assert section in data["modality_aliases"], section
        modality = data["modality_aliases"][section]
        code = _field(obr, 4).split("^")[0]
        assert modality in {None, data["procedures"][code]["modality"]}, (section, code)
