"""`overread check --prior FILE`: the files given stand for the patient's prior studies (docs/cli.md).

The command runs in process (``listener.cli.main``); one run of each exit status (1 with findings,
2 for a prior of another patient) runs as a real subprocess."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import REPO, run_cli

SAMPLES = REPO / "samples"
# The same exam type, two days earlier, of another patient (ZZ9000103); made ZZ9000104's below.
XR_PRIOR = SAMPLES / "hl7/xr-chest-2v-normal.hl7"
# ZZ9000104, "COMPARISON: None."
XR_NEW = SAMPLES / "hl7/xr-chest-pneumothorax-no-communication.hl7"


def _check(*args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``overread check --format json ARGS``: in process, or with ``process`` in a subprocess."""
    return run_cli("check", "--format", "json", *args, process=process)


def _rules(proc: subprocess.CompletedProcess[str]) -> set[str]:
    assert proc.returncode in (0, 1), proc.stderr
    return {f["rule"] for line in proc.stdout.splitlines() for f in json.loads(line)["findings"]}


def _as_patient(source: Path, target: Path, old: str = "ZZ9000103", new: str = "ZZ9000104") -> Path:
    target.write_bytes(source.read_bytes().replace(old.encode(), new.encode()))
    return target


def test_prior_of_the_same_patient_gives_none_with_priors(tmp_path: Path) -> None:
    """'Comparison: None' with a prior chest radiograph of the patient given: the rule fires; without it, not."""
    prior = _as_patient(XR_PRIOR, tmp_path / "prior.hl7")
    assert "comparison.none_with_priors" not in _rules(_check(str(XR_NEW)))
    with_prior = _check("--prior", str(prior), str(XR_NEW), process=True)
    assert with_prior.returncode == 1 and "comparison.none_with_priors" in _rules(with_prior)


def test_fhir_prior_and_fhir_report(tmp_path: Path) -> None:
    """A FHIR DiagnosticReport is decoded as a prior through the FHIR decoder."""
    prior = _as_patient(SAMPLES / "fhir/xr-chest-2v-normal.json", tmp_path / "prior.json")
    new = SAMPLES / "fhir/xr-chest-pneumothorax-no-communication.json"
    assert "comparison.none_with_priors" not in _rules(_check(str(new)))
    assert "comparison.none_with_priors" in _rules(_check("--prior", str(prior), str(new)))


def test_prior_not_found_needs_known_priors(tmp_path: Path) -> None:
    """A cited comparison date matching no prior given: prior_not_found; the prior's own date: none."""
    prior = _as_patient(XR_PRIOR, tmp_path / "prior.hl7")
    cites_other = tmp_path / "other.hl7"
    cites_other.write_bytes(
        XR_NEW.read_bytes().replace(b"COMPARISON: None.", b"COMPARISON: Chest radiograph 11/02/2026.")
    )
    cites_prior = tmp_path / "prior-date.hl7"
    cites_prior.write_bytes(
        XR_NEW.read_bytes().replace(b"COMPARISON: None.", b"COMPARISON: Chest radiograph 11/17/2026.")
    )
    assert "comparison.prior_not_found" not in _rules(_check(str(cites_other)))  # priors unknown: silent
    assert "comparison.prior_not_found" in _rules(_check("--prior", str(prior), str(cites_other)))
    assert "comparison.prior_not_found" not in _rules(_check("--prior", str(prior), str(cites_prior)))


def test_prior_of_another_patient_is_an_error_naming_the_file() -> None:
    proc = _check("--prior", str(XR_PRIOR), str(XR_NEW), process=True)
    assert proc.returncode == 2
    assert f"--prior {XR_PRIOR}#1: another patient than {XR_NEW}#1" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_same_number_of_another_authority_is_another_patient(tmp_path: Path) -> None:
    prior = tmp_path / "prior.hl7"
    prior.write_bytes(XR_PRIOR.read_bytes().replace(b"ZZ9000103^^^LEMC", b"ZZ9000104^^^ELSEWHERE"))
    proc = _check("--prior", str(prior), str(XR_NEW))
    assert proc.returncode == 2 and f"--prior {prior}#1: another patient" in proc.stderr


def test_unreadable_or_undecodable_prior_is_an_error(tmp_path: Path) -> None:
    proc = _check("--prior", str(tmp_path / "nope.hl7"), str(XR_NEW))
    assert proc.returncode == 2 and "--prior" in proc.stderr and "nope.hl7" in proc.stderr
    junk = tmp_path / "junk.hl7"
    junk.write_text("not a message\n")
    proc = _check("--prior", str(junk), str(XR_NEW))
    assert proc.returncode == 2 and f"--prior {junk}#1: cannot be decoded" in proc.stderr


def test_the_reports_own_accession_is_not_its_prior() -> None:
    """The checked file given as its own prior: no other study, so no finding."""
    assert "comparison.none_with_priors" not in _rules(_check("--prior", str(XR_NEW), str(XR_NEW)))
