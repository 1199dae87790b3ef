"""FHIR layer: DiagnosticReport/Bundle -> Reports (decode), Task/DetectedIssue/OperationOutcome (encode).

Pure: no I/O, no clock, no logging. fhir.resources is used for validation
(inputs) and for checking what we build (outputs); no FHIR type leaves this
package. Call :func:`prime_models` once at start-up.
"""

from listener.fhir.decode import DEFAULT_CLIENT, FhirClient, decode_fhir
from listener.fhir.models import prime_models

__all__ = ["DEFAULT_CLIENT", "FhirClient", "decode_fhir", "prime_models"]
