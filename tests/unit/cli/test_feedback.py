"""The feedback document for an external group: figures, cases, QA examples, HTML, PDF, and no patient data.

A SQLite store holds a month of real messages as the daemon stores them:
Nocturna Teleradiology's overnight CT head preliminaries (NT7741) and chest
X-ray preliminaries that miss the communication of a pneumothorax (NT7802),
the internal finals for them (R1311), one final that adds a subdural
hematoma, one explicit score, and a preliminary of the month before. Each
message carries its own patient name, record number and birth date; none of
them may appear in the JSON, the HTML or the PDF's text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import ImageStat

from listener.cli import main
from listener.feedback import PRIVACY_NOTE, feedback_document
from listener.feedback_render import render_html, render_pdf
from listener.outcome_data import HistoryContext
from listener.outcomes import load_outcome_rules
from listener.outcomes.contracts import contract_for, load_contracts
from listener.pipeline import Pipeline
from listener.sites import load_directory
from listener.store import ScoreRecord, SQLiteStore, Store
from tests.conftest import REPO
from tests.unit.store.records import processed, save_processed

GROUP = "Nocturna Teleradiology"
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
CT = (REPO / "samples/hl7/ct-head-wo-overnight-telerad-prelim.hl7").read_bytes()
XR = (REPO / "samples/hl7/xr-chest-pneumothorax-no-communication.hl7").read_bytes()
CT_DAYS = (3, 5, 10, 12, 17, 19, 24, 26)
XR_DAYS = (6, 13, 20)
SDH_DAY, SCORED_DAY, OCTOBER_DAY = 17, 10, 28
GIVEN = b"QUILLON"
BIRTH = b"19471203"


def _patient(raw: bytes, old_mrn: bytes, old_name: bytes, old_birth: bytes, n: int) -> bytes:
    family = b"ZZFB" + bytes([ord("A") + n // 26, ord("A") + n % 26])
    return raw.replace(old_mrn, b"ZZ95%05d" % n).replace(old_name, family + b"^" + GIVEN).replace(old_birth, BIRTH)


def ct_prelim(month: int, day: int, n: int) -> bytes:
    raw = CT.replace(b"20261120", b"2026%02d%02d" % (month, day)).replace(
        b"A2611200044", b"N26%02d%02d%03d" % (month, day, n)
    )
    return _patient(raw, b"ZZ9000101", b"ZZTEST^WALTER", b"19580312", n)


def ct_final(month: int, day: int, n: int, *, sdh: bool = False) -> bytes:
    raw = (
        ct_prelim(month, day, n)
        .replace(b"|CT|P||", b"|CT|F||")
        .replace(b"||||||P|||", b"||||||F|||")
        .replace(b"NT7741&HALVORSEN&INGRID&&&&MD^^^^^^NOCTURNA", b"R1311&DELACROIX&SAMUEL&&&&MD")
        .replace(b"NT7741^HALVORSEN^INGRID^^^^MD", b"R1311^DELACROIX^SAMUEL^^^^MD")
        .replace(b"NOCTURNA_RAD|NOCTURNA TELERAD", b"HALCYON_RIS|LEMC")
        .replace(b"021400-0600", b"081400-0600")
        .replace(
            b"~Preliminary interpretation by Nocturna Teleradiology. The final interpretation will be issued by the"
            b" LEMC radiologist.",
            b"",
        )
    )
    if sdh:
        raw = raw.replace(
            b"Extra-axial spaces: No extra-axial fluid collection.",
            # A final that names the patient's record number in its text: the excerpt masks it.
            b"Extra-axial spaces: Thin acute left subdural hematoma along the convexity, 4 mm (ZZ95%05d)." % n,
        ).replace(
            b"1. No acute intracranial abnormality. No intracranial hemorrhage, mass effect or calvarial fracture.",
            b"1. Thin acute left subdural hematoma, 4 mm, without mass effect.",
        )
    return raw


def xr_prelim(day: int, n: int) -> bytes:
    raw = (
        XR.replace(b"20261119", b"202611%02d" % day)
        .replace(b"A2611190301", b"N2611%02d%03d" % (day, n))
        .replace(b"|DX|F||", b"|DX|P||")
        .replace(b"||||||F|||", b"||||||P|||")
        .replace(b"R1311&DELACROIX&SAMUEL", b"NT7802&VOSS&KARL")
        .replace(b"R1311^DELACROIX^SAMUEL", b"NT7802^VOSS^KARL")
    )
    return _patient(raw, b"ZZ9000104", b"ZZTEST^CALLUM", b"20020130", n)


def xr_final(day: int, n: int) -> bytes:
    return (
        xr_prelim(day, n)
        .replace(b"|DX|P||", b"|DX|F||")
        .replace(b"||||||P|||", b"||||||F|||")
        .replace(b"NT7802&VOSS&KARL", b"R1311&DELACROIX&SAMUEL")
        .replace(b"NT7802^VOSS^KARL", b"R1311^DELACROIX^SAMUEL")
        .replace(b"143000-0600", b"163000-0600")
        .replace(
            b"without radiographic signs of tension.",
            b"without radiographic signs of tension.~Findings were discussed with Dr. Okafor at 16:25 by telephone.",
        )
    )


def _save(store: Store, pipeline: Pipeline, raw: bytes, control_id: str, received: datetime) -> None:
    save_processed(store, processed(pipeline, raw, control_id, received, app=None, facility=None, feed=None))


def fill_month(store: Store, pipeline: Pipeline) -> dict[str, str]:
    """Store the month's messages; returns the role of each accession."""
    roles = {}
    for i, day in enumerate(CT_DAYS):
        n = i + 1
        accession = f"N2611{day:02d}{n:03d}"
        at = datetime(2026, 11, day, 8, 15, tzinfo=UTC)
        _save(store, pipeline, ct_prelim(11, day, n), f"P{n}", at)
        _save(store, pipeline, ct_final(11, day, n, sdh=day == SDH_DAY), f"F{n}", at + timedelta(hours=6))
        roles[accession] = "sdh" if day == SDH_DAY else "scored" if day == SCORED_DAY else "ct"
    for i, day in enumerate(XR_DAYS):
        n = 50 + i
        at = datetime(2026, 11, day, 20, 30, tzinfo=UTC)
        _save(store, pipeline, xr_prelim(day, n), f"P{n}", at)
        _save(store, pipeline, xr_final(day, n), f"F{n}", at + timedelta(hours=2))
        roles[f"N2611{day:02d}{n:03d}"] = "xr"
    # A preliminary of October, finalised on November 1st: outside the window (its clinical time counts).
    _save(store, pipeline, ct_prelim(10, OCTOBER_DAY, 90), "P90", datetime(2026, 10, OCTOBER_DAY, 8, 15, tzinfo=UTC))
    _save(store, pipeline, ct_final(10, OCTOBER_DAY, 90), "F90", datetime(2026, 11, 1, 9, 0, tzinfo=UTC))
    scored = next(a for a, r in roles.items() if r == "scored")
    store.record_scores(
        [ScoreRecord(scored, "2a", "cli", datetime(2026, 11, 11, 9, 0, tzinfo=UTC), "dr-lead", "scalp hematoma size")]
    )
    return roles


SECRETS = [b"ZZ95%05d" % n for n in (*range(1, 9), 50, 51, 52, 90)]
SECRETS += [b"ZZFB" + bytes([ord("A") + n // 26, ord("A") + n % 26]) for n in (*range(1, 9), 50, 51, 52)]
SECRETS += [GIVEN, BIRTH, b"1947-12-03", b"WALTER", b"CALLUM", b"ZZ9000101", b"ZZ9000104"]


def _no_patient_data(text: str) -> None:
    for secret in SECRETS:
        assert secret.decode() not in text, secret


@pytest.fixture(name="state", scope="module")
def fixture_state(
    tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline
) -> Iterator[tuple[Path, dict[str, str]]]:
    state = tmp_path_factory.mktemp("feedback") / "var"
    store = SQLiteStore.in_state_dir(state)
    try:
        roles = fill_month(store, pipeline)
    finally:
        store.close()
    yield state, roles


def _document(state: Path, pipeline: Pipeline) -> dict[str, object]:
    store = SQLiteStore.in_state_dir(state)
    try:
        return feedback_document(
            store,
            HistoryContext(pipeline, load_outcome_rules(), {}),
            load_directory(REPO / "policies"),
            GROUP,
            since=SINCE,
            until=UNTIL,
            contract=contract_for(load_contracts(), GROUP),
            min_reads=5,
        )
    finally:
        store.close()


@pytest.fixture(name="doc", scope="module")
def fixture_doc(state: tuple[Path, dict[str, str]], pipeline: Pipeline) -> dict[str, object]:
    return _document(state[0], pipeline)


def test_same_store_same_document(doc: dict, state: tuple[Path, dict[str, str]], pipeline: Pipeline) -> None:
    """The second run reads the comparisons the first one cached: the document is the same, byte for byte."""
    again = _document(state[0], pipeline)
    assert json.dumps(again, sort_keys=False) == json.dumps(doc, sort_keys=False)
    assert render_html(again) == render_html(doc)


def test_a_window_without_reads(state: tuple[Path, dict[str, str]], pipeline: Pipeline) -> None:
    """No read of the group in the window: zeros, no rate, no case, the reason said; HTML and PDF still render."""
    store = SQLiteStore.in_state_dir(state[0])
    try:
        empty = feedback_document(
            store,
            HistoryContext(pipeline, load_outcome_rules(), {}),
            load_directory(REPO / "policies"),
            GROUP,
            since=datetime(2025, 6, 1, tzinfo=UTC),
            until=datetime(2025, 6, 4, tzinfo=UTC),
            contract=None,
        )
    finally:
        store.close()
    assert (empty["volume"]["reads"], empty["cases"], empty["qa_defects"], empty["contract"]) == (0, [], [], None)
    assert empty["too_few"] is True and empty["note"] == "no reads"
    assert [w["since"] for w in empty["trend"]["weeks"]] == ["2025-06-01T00:00:00Z"]
    assert {t["status"] for t in empty["targets"]} == {"no target"}
    html = render_html(empty)
    assert "No discrepancy case in the window." in html and "No contract targets are configured" in html
    assert render_pdf(empty).startswith(b"%PDF-")


def test_figures_of_the_group(doc: dict) -> None:
    reads = len(CT_DAYS) + len(XR_DAYS)
    assert doc["group"] == GROUP and doc["readers"] == ["NT7741", "NT7802"]
    assert doc["volume"]["reads"] == reads and doc["volume"]["overread"] == reads and doc["volume"]["graded"] == reads
    any_, significant = doc["discrepancies"]["any"], doc["discrepancies"]["significant"]
    assert (any_["count"], significant["count"], doc["discrepancies"]["3b"]["count"]) == (2, 1, 1)
    assert any_["rate"] == pytest.approx(2 / reads, abs=1e-6)
    assert any_["low"] < any_["rate"] < any_["high"]
    assert doc["too_few"] is False and doc["disagreements"] == 1
    # Turnaround: CT exam 01:52 -> prelim 02:14 (22 min), XR 14:08 -> 14:30 (22 min); finals 6 h and 2 h later.
    prelim = doc["turnaround"]["prelim_minutes"]
    assert (prelim["count"], prelim["median"], prelim["p90"]) == (reads, 22.0, 22.0)
    final = doc["turnaround"]["prelim_to_final_minutes"]
    assert (final["count"], final["median"], final["p90"]) == (reads, 360.0, 360.0)
    targets = {t["measure"]: t for t in doc["targets"]}
    assert (targets["prelim_p90"]["target"], targets["prelim_p90"]["status"]) == (60.0, "met")
    assert targets["final_median"]["status"] == "no target"
    assert (targets["significant_rate"]["target"], targets["significant_rate"]["status"]) == (0.02, "missed")
    assert targets["discrepancy_rate"]["value"] == any_["rate"]
    # The trend: five spans of November, whose counts add up to the month's.
    weeks = doc["trend"]["weeks"]
    assert [w["since"][:10] for w in weeks] == ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22", "2026-11-29"]
    assert sum(w["graded"] for w in weeks) == reads and sum(w["any"]["count"] for w in weeks) == 2
    assert [w["significant"]["count"] for w in weeks] == [0, 0, 1, 0, 0]
    assert "N2610" not in json.dumps(doc)  # October's preliminary is outside the window


def test_cases_side_by_side(doc: dict, state: tuple[Path, dict[str, str]]) -> None:
    roles = state[1]
    by_role = {roles[c["accession"]]: c for c in doc["cases"]}
    assert sorted(by_role) == ["scored", "sdh"]
    sdh = by_role["sdh"]
    assert (sdh["grade"], sdh["proposed_grade"], sdh["explicit_grade"]) == ("3b", "3b", None)
    assert sdh["exam"] == {"code": "70450", "text": "CT HEAD WO CONTRAST", "modality": "CT"}
    assert (sdh["prelim"]["reader"], sdh["final"]["reader"]) == ("NT7741", "R1311")
    critical = next(d for d in sdh["differences"] if d["kind"] == "critical_added")
    assert any("No intraparenchymal hemorrhage" in e["text"] for e in critical["prelim"])
    assert any("subdural hematoma" in e["text"] for e in critical["final"])
    assert any("4 mm ([patient identifier removed])." in e["text"] for e in critical["final"])
    scored = by_role["scored"]
    assert (scored["grade"], scored["proposed_grade"], scored["disagreement"]) == ("2a", "1", True)
    assert scored["notes"] == [{"grade": "2a", "source": "cli", "scorer": "dr-lead", "note": "scalp hematoma size"}]


def test_qa_defects_and_operational(doc: dict) -> None:
    qa = {q["category"]: q for q in doc["qa_defects"]}
    # The chest preliminaries state a pneumothorax and no communication of it.
    assert qa["communication"]["count"] == len(XR_DAYS)
    example = qa["communication"]["example"]
    assert example["rule"] == "communication.critical_not_communicated" and example["accession"].startswith("N2611")
    assert example["message"] and all("pneumothorax" in e.lower() for e in example["evidence"])
    top = {(o["source"], o["name"]): o["count"] for o in doc["operational"]["top"]}
    assert top[("qa", "communication")] == len(XR_DAYS)
    assert top[("comparison", "communication_added")] == len(XR_DAYS)
    assert "submitted" in doc["operational"]["note"]


def test_no_patient_data_in_json_and_html(doc: dict) -> None:
    text = json.dumps(doc, ensure_ascii=False)
    html = render_html(doc)
    _no_patient_data(text)
    _no_patient_data(html)
    assert doc["privacy"] == PRIVACY_NOTE and PRIVACY_NOTE in html
    sdh = next(c for c in doc["cases"] if c["grade"] == "3b")
    assert sdh["accession"] in html and "Thin acute left subdural hematoma" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<svg" in html


def test_pdf_pages_look_right(doc: dict, tmp_path: Path) -> None:
    data = render_pdf(doc)
    pdf = pdfium.PdfDocument(data)
    try:
        assert 2 <= len(pdf) <= 6
        text = ""
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            text += textpage.get_text_range() + "\n"
            image = page.render(scale=1).to_pil().convert("L")
            image.save(tmp_path / f"page{i}.png")
            assert ImageStat.Stat(image).var[0] > 100, f"page {i + 1} looks blank"
        flat = " ".join(text.split())
        sdh = next(c for c in doc["cases"] if c["grade"] == "3b")
        assert GROUP in flat and sdh["accession"] in flat and PRIVACY_NOTE in flat
        assert flat.count(PRIVACY_NOTE) == len(pdf)  # on every page
        _no_patient_data(text)
    finally:
        pdf.close()


def test_command_writes_each_format(
    state: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["feedback", "--state-dir", str(state[0]), "--group", "nocturna teleradiology"]
    window = ["--since", "2026-11-01T00:00:00Z", "--until", "2026-12-01T00:00:00Z", "--min-reads", "5"]
    assert main([*base, *window, "--format", "json"]) == 0  # standard output
    doc = json.loads(capsys.readouterr().out)
    assert doc["group"] == GROUP and len(doc["cases"]) == 2 and doc["window"]["since"] == "2026-11-01T00:00:00Z"
    out = tmp_path / "feedback.pdf"
    assert main([*base, *window, "--format", "pdf", "--output", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF-") and out.stat().st_size > 1000
    assert "2 discrepancy case(s)" in capsys.readouterr().err
    assert main(["feedback", "--state-dir", str(state[0]), "--group", "No Such Group", "--format", "json"]) == 1
    assert main([*base, "--since", "2026-12-01T00:00:00Z", "--until", "2026-11-01T00:00:00Z"]) == 2


def test_pdf_without_weasyprint_names_the_library(state: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A WeasyPrint that cannot load Pango (as on a host without it): exit 2 and a message naming the library."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "weasyprint.py").write_text("raise OSError(\"cannot load library 'libpango-1.0-0': not found\")\n")
    proc = subprocess.run(
        [sys.executable, "-m", "listener", "feedback", "--state-dir", str(state[0]), "--group", GROUP]
        + ["--format", "pdf", "--output", str(tmp_path / "x.pdf")],
        env={"PYTHONPATH": f"{shim}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "libpango-1.0-0" in proc.stderr and "WeasyPrint" in proc.stderr
    assert not (tmp_path / "x.pdf").exists()
