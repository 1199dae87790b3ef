"""A FHIR preliminary and final of one order land on the same accession (``overread history``).

The decoder takes the accession from the DiagnosticReport's own identifier of
type ACSN, else from the ``basedOn`` ServiceRequest's ACSN identifier, else
from the order's filler number (FILL), as an HL7 feed carries it in OBR-3
(docs/hl7-input.md). A preliminary that names its order only through
``basedOn`` and a final that carries the accession itself join one history.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from listener.model import ResultStatus
from tests.conftest import REPO
from tests.unit.fhir.conftest import Decode

SAMPLE: dict[str, Any] = json.loads((REPO / "samples/fhir/xr-chest-2v-normal.json").read_text(encoding="utf-8"))
ACCESSION = "A2611170088"


def _order(doc: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in doc["contained"] if r["resourceType"] == "ServiceRequest")


def _body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_prelim_by_based_on_and_final_by_identifier_share_the_accession(decode: Decode) -> None:
    prelim = copy.deepcopy(SAMPLE)
    prelim["status"] = "preliminary"
    del prelim["identifier"]  # only the order (basedOn) names the accession
    final = copy.deepcopy(SAMPLE)
    _order(final)["identifier"] = [i for i in _order(final)["identifier"] if i["type"]["coding"][0]["code"] != "ACSN"]
    (p,) = decode(_body(prelim))
    (f,) = decode(_body(final))
    assert (p.status, f.status) == (ResultStatus.PRELIMINARY, ResultStatus.FINAL)
    assert p.accession == f.accession == ACCESSION


def test_filler_number_of_the_order_is_the_fallback(decode: Decode) -> None:
    doc = copy.deepcopy(SAMPLE)
    doc["status"] = "preliminary"
    del doc["identifier"]
    _order(doc)["identifier"] = [i for i in _order(doc)["identifier"] if i["type"]["coding"][0]["code"] != "ACSN"]
    (report,) = decode(_body(doc))
    assert report.accession == ACCESSION and report.filler_order == ACCESSION


def test_own_identifier_wins_over_the_order(decode: Decode) -> None:
    doc = copy.deepcopy(SAMPLE)
    doc["identifier"][0]["value"] = "A-OWN-1"
    (report,) = decode(_body(doc))
    assert report.accession == "A-OWN-1"
