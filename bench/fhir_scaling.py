r"""Cost per KB of FHIR input by shape, as the number of elements of one kind grows.

Run by hand (a minute or two):

    PYTHONPATH=. .venv/bin/python bench/fhir_scaling.py                        # decode, n = 100 .. 10,000
    PYTHONPATH=. .venv/bin/python bench/fhir_scaling.py --full --sizes 100,1000  # decode + QA + routing
    PYTHONPATH=. .venv/bin/python bench/fhir_scaling.py --count --sizes 200,1600 --json
    PYTHONPATH=. .venv/bin/python bench/fhir_scaling.py --write fanout 810000 > /tmp/fanout.json

Each shape is ``samples/fhir/bundle-transaction-mr-knee-left.json`` (a transaction
Bundle: Patient, ServiceRequest, Practitioner, five result Observations, one
DiagnosticReport) with n elements of one kind added (no corpus text). Shapes
(docs/hardening.md, "FHIR input size and shape"):

* ``entries``: n more Observation entries nobody references;
* ``results``: n Observations, each referenced from ``result``;
* ``same_result``: n ``result`` references to one 10 KB Observation;
* ``fanout``: five Observations in a ``hasMember`` chain, each naming the next
  n**(1/4) times (the report text grew as n);
* ``contained``: n contained Observations referenced as ``#id``;
* ``presented``: n text ``presentedForm`` attachments;
* ``identifiers``, ``codings``, ``extensions``: n of each on the DiagnosticReport;
* ``nested``: extensions 25 deep, n/25 of them;
* ``long``: a result ``valueString`` of n sentences;
* ``conclusion``: a conclusion of n lines, each also at the end of the text;
* ``flags``: n distinct interpretation codes on a result Observation;
* ``reasons``: n distinct reasons on the ServiceRequest;
* ``same_order``: n ``basedOn`` references to one ServiceRequest with 100 reasons;
* ``dup_ids``: n Observations sharing one id;
* ``reports``: 50 DiagnosticReports (the most a body may hold) and n Observations;
* ``bad_last``: n Observations, the last with an object for ``valueString``
  (refused: an OperationOutcome naming ``Bundle.entry[n+8].resource.valueString``).

Default (timed) mode prints CPU ms per KB of body (best of ``--repeat``) for each
shape and size of ``decode_fhir`` (``--full``: ``process_fhir``, QA and routing
too), and exits 1 when a shape's ms/KB at the largest size exceeds ``--factor``
times its ms/KB at the smallest. Bodies over 4 MB (the default
``http_max_body_size``) are skipped.

``--count`` replaces the clock by a deterministic measure of work, as
``bench/text_scaling.py --count`` does: Python and C function calls
(``sys.setprofile``) plus Python lines run (``sys.settrace``), plus the
characters of report text built (text the QA rules would read next). It
cannot see a quadratic inside one C call (``x in list``): ``flags``,
``reasons`` and ``conclusion`` are left to the clock, with ``--stage report``
(only the Reports built from the parsed JSON: no fhir.resources validation,
whose linear cost would hide them at small sizes).
``tests/unit/fhir/test_linear_cost.py`` runs it in a subprocess.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.text_scaling import verdict  # noqa: E402

SAMPLE = REPO / "samples" / "fhir" / "bundle-transaction-mr-knee-left.json"
MAX_BODY = 4 * 1024 * 1024
DEFAULT_SIZES = (100, 1000, 10000)
_URN = "urn:uuid:00000000-0000-4000-8000-%012d"

JSON = dict[str, Any]


def _parts() -> tuple[JSON, JSON, list[JSON], JSON]:
    """A fresh copy of the sample: (bundle, DiagnosticReport, Observation entries, ServiceRequest)."""
    bundle = json.loads(SAMPLE.read_bytes())
    by_type: dict[str, list[JSON]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return (
        bundle,
        by_type["DiagnosticReport"][0]["resource"],
        by_type["Observation"],
        by_type["ServiceRequest"][0]["resource"],
    )


def _obs(text: str = "Small joint effusion.") -> JSON:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "18782-3"}]},
        "valueString": text,
    }


def _entry(resource: JSON, i: int) -> JSON:
    return {"fullUrl": _URN % i, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _entries(n: int) -> JSON:
    bundle, _, _, _ = _parts()
    bundle["entry"] += [_entry(_obs(), i) for i in range(n)]
    return bundle


def _results(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    bundle["entry"] += [_entry(_obs(f"Finding {i} noted."), i) for i in range(n)]
    dr["result"] += [{"reference": _URN % i} for i in range(n)]
    return bundle


def _same_result(n: int) -> JSON:
    bundle, dr, obs, _ = _parts()
    obs[3]["resource"]["valueString"] = "Small effusion. " * 640
    dr["result"] += [{"reference": obs[3]["fullUrl"]}] * n
    return bundle


def _fanout(n: int) -> JSON:
    k = max(2, round(n**0.25))
    bundle, dr, _, _ = _parts()
    for level in range(5):
        obs = _obs(f"Level {level} finding.")
        if level < 4:
            obs["hasMember"] = [{"reference": _URN % (level + 1)}] * k
        bundle["entry"].append(_entry(obs, level))
    dr["result"].append({"reference": _URN % 0})
    return bundle


def _contained(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    dr["contained"] = [dict(_obs(f"Finding {i} noted."), id=f"o{i}") for i in range(n)]
    dr["result"] += [{"reference": f"#o{i}"} for i in range(n)]
    return bundle


def _presented(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    dr["presentedForm"] = [
        {"contentType": "text/plain", "data": base64.b64encode(f"Finding {i}: small effusion.".encode()).decode()}
        for i in range(n)
    ]
    return bundle


def _identifiers(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    dr["identifier"] += [{"system": "urn:example:x", "value": f"V{i}"} for i in range(n)]
    return bundle


def _codings(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    dr["code"]["coding"] = [{"system": "urn:example:x", "code": f"C{i}"} for i in range(n)] + dr["code"]["coding"]
    return bundle


def _extensions(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    dr["extension"] = [{"url": f"urn:example:{i}", "valueString": "v"} for i in range(n)]
    return bundle


def _nested(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    deep: JSON = {"url": "urn:example:x", "valueString": "v"}
    for _ in range(25):
        deep = {"url": "urn:example:x", "extension": [deep]}
    dr["extension"] = [copy.deepcopy(deep) for _ in range(max(1, n // 25))]
    return bundle


def _long(n: int) -> JSON:
    bundle, _, obs, _ = _parts()
    obs[3]["resource"]["valueString"] = "No acute finding. " * n
    return bundle


def _conclusion(n: int) -> JSON:
    bundle, dr, obs, _ = _parts()
    lines = [f"effusion {i}" for i in range(n)]
    obs[3]["resource"]["valueString"] = "a" * (20 * n) + " " + " ".join(lines)
    dr["conclusion"] = "\n".join(lines)
    return bundle


def _flags(n: int) -> JSON:
    bundle, _, obs, _ = _parts()
    obs[3]["resource"]["interpretation"] = [
        {"coding": [{"system": "urn:example:x", "code": f"F{i}"}]} for i in range(n)
    ]
    return bundle


def _reason_list(n: int) -> list[JSON]:
    return [
        {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": f"M{i}"}], "text": f"Reason {i}"}
        for i in range(n)
    ]


def _reasons(n: int) -> JSON:
    bundle, _, _, sr = _parts()
    sr["reasonCode"] = _reason_list(n)
    return bundle


def _same_order(n: int) -> JSON:
    bundle, dr, _, sr = _parts()
    sr["reasonCode"] = _reason_list(100)
    dr["basedOn"] = dr["basedOn"] * n
    return bundle


def _dup_ids(n: int) -> JSON:
    bundle, _, _, _ = _parts()
    bundle["entry"] += [_entry(dict(_obs(), id="same"), i) for i in range(n)]
    return bundle


def _reports(n: int) -> JSON:
    bundle, dr, _, _ = _parts()
    bundle["entry"] += [_entry(copy.deepcopy(dr), 10**7 + i) for i in range(49)]
    bundle["entry"] += [_entry(_obs(), i) for i in range(n)]
    return bundle


def _bad_last(n: int) -> JSON:
    bundle = _entries(n)
    bundle["entry"][-1]["resource"]["valueString"] = {"not": "a string"}
    return bundle


SHAPES: dict[str, Callable[[int], JSON]] = {
    "entries": _entries,
    "results": _results,
    "same_result": _same_result,
    "fanout": _fanout,
    "contained": _contained,
    "presented": _presented,
    "identifiers": _identifiers,
    "codings": _codings,
    "extensions": _extensions,
    "nested": _nested,
    "long": _long,
    "conclusion": _conclusion,
    "flags": _flags,
    "reasons": _reasons,
    "same_order": _same_order,
    "dup_ids": _dup_ids,
    "reports": _reports,
    "bad_last": _bad_last,
}


def body(shape: str, n: int) -> bytes:
    """The sample Bundle grown by ``n`` elements of ``shape``."""
    return json.dumps(SHAPES[shape](n)).encode()


def run(
    shapes: list[str], sizes: list[int], *, count: bool, full: bool, repeat: int, stage: str = "decode"
) -> dict[str, dict[int, float]]:
    """Cost per KB of body for each shape and size: CPU ms/KB, or (``count``) work units/KB."""
    from bench.text_scaling import WorkCounter
    from listener.fhir.decode import decode_fhir
    from listener.fhir.report import ReportContext, report_from_diagnostic_report
    from listener.fhir.resolve import Index, walk_entries
    from listener.pipeline import process_fhir
    from tests.unit.qa.factory import pipeline

    p = pipeline()
    mapping = p.mappings.for_sender("fhir", "")
    now = datetime(2026, 12, 1, tzinfo=UTC)

    ctx = ReportContext(
        version="R4",
        client_name="fhir",
        facility="",
        feed="default",
        mapping=mapping,
        procedures=p.procedures,
        received_at=now,
    )

    def reports_only(raw: bytes) -> int:
        """Build the Reports of a valid body without decode_fhir's checks and validation."""
        doc = json.loads(raw)
        index = Index()
        for _, full_url, resource in walk_entries(doc):
            index.add(resource, full_url)
        return sum(
            len(report_from_diagnostic_report(r, f"Bundle.entry[{i}].resource", index, ctx, full_url=url).text)
            for i, url, r in walk_entries(doc)
            if r.get("resourceType") == "DiagnosticReport"
        )

    def once(raw: bytes) -> int:
        """Run one body; the characters of report text it made."""
        if stage == "report":
            return reports_only(raw)
        if full:
            outcome = process_fhir(raw, p, received_at=now, media_type="application/fhir+json")
            return sum(len(r.report.text) for r in outcome.reports)
        try:
            reports = decode_fhir(
                raw, mapping=mapping, received_at=now, media_type="application/fhir+json", procedures=p.procedures
            )
        except Exception:  # noqa: BLE001 - a refused body (bad_last) costs what it costs
            return 0
        return sum(len(r.text) for r in reports)

    once(body("results", 10))  # warm-up: validators, lazy compiles
    out: dict[str, dict[int, float]] = {}
    for shape in shapes:
        out[shape] = {}
        for n in sizes:
            raw = body(shape, n)
            kb = len(raw) / 1024
            if len(raw) > MAX_BODY:
                print(f"{shape:12} n={n:<7} {kb:8.0f} KB  over the 4 MB body limit; skipped", file=sys.stderr)
                continue
            if count:
                with WorkCounter() as work:
                    chars = once(raw)
                out[shape][n] = (work.units + chars) / kb
                continue
            best = float("inf")
            for _ in range(repeat):
                t = time.process_time()
                chars = once(raw)
                best = min(best, time.process_time() - t)
            out[shape][n] = best * 1000 / kb
            print(
                f"{shape:12} n={n:<7} {kb:8.0f} KB {best * 1000:9.0f} ms {out[shape][n]:7.2f} ms/KB  text {chars} chars",
                flush=True,
            )
    return out


def growth(per_kb: dict[int, float]) -> float:
    """Cost per KB at the largest size over cost per KB at the smallest."""
    sizes = sorted(per_kb)
    return per_kb[sizes[-1]] / per_kb[sizes[0]] if sizes else 1.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="n, comma-separated")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, of: " + ", ".join(SHAPES))
    ap.add_argument("--factor", type=float, default=2.0, help="largest allowed growth of the cost per KB")
    ap.add_argument("--full", action="store_true", help="time process_fhir (decode, QA, routing), not decode only")
    ap.add_argument(
        "--stage",
        choices=("decode", "report"),
        default="decode",
        help="report: time only building Reports from the parsed JSON (no validation)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per size; the fastest counts")
    ap.add_argument("--count", action="store_true", help="count work (calls + lines + text) instead of time")
    ap.add_argument("--json", action="store_true", help="print the table as one JSON object")
    ap.add_argument("--write", nargs=2, metavar=("SHAPE", "N"), help="print one body and exit")
    args = ap.parse_args(argv)
    if args.write:
        sys.stdout.buffer.write(body(args.write[0], int(args.write[1])))
        return 0
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    shapes = [s for s in args.shapes.split(",") if s]
    table = run(shapes, sizes, count=args.count, full=args.full, repeat=args.repeat, stage=args.stage)
    return verdict(table, factor=args.factor, as_json=args.json, growth=growth)


if __name__ == "__main__":
    sys.exit(main())
