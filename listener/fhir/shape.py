"""Limits on a parsed FHIR JSON body's shape, checked before fhir.resources sees it.

Pure: no I/O, no clock, no logging.

Two things a body can hold that FHIR never needs, and that cost us dearly or
corrupt what we store:

* Deep nesting. fhir.resources validates recursively: an extension nested 200
  deep ends in ``RecursionError`` (a 500, stored as our failure), and any
  recursive walk of ours would too. No real resource comes near
  :data:`MAX_DEPTH` levels (a Bundle entry's contained resource's nested
  extension's coding is about 12), so a deeper body is refused as a whole.
* C0 control characters. FHIR ``string`` (and every type derived from it) is
  ``[ \\r\\n\\t\\S]+``: NUL and the other C0 characters except tab, CR and LF
  are not allowed anywhere. They would travel into identifiers, the store and
  the routing messages we send to a RIS (HL7 v2 treats some as delimiters).

The walk is iterative and visits each node once, so its cost is linear in the
body and it cannot itself run out of stack.
"""

from __future__ import annotations

import re
from typing import Any

from listener.errors import FhirDecodeError
from listener.fhir.models import fhirpath

__all__ = ["MAX_DEPTH", "check_shape"]

#: Deepest nesting of JSON objects and arrays accepted; each counts one level
#: (``{"extension": [{...}]}`` is two). 64 leaves ample room for real resources
#: and stays far below where fhir.resources' validation recurses out of stack
#: (about 200 levels of ``extension``).
MAX_DEPTH = 64

# C0 controls other than TAB (09), LF (0A) and CR (0D): outside FHIR's string regex.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

# A path is kept as a chain of (parent, key) pairs and rendered only for an error.
_Path = tuple[Any, str | int] | None


def _render(root: str, path: _Path) -> str:
    parts: list[str | int] = []
    while path is not None:
        path, part = path
        parts.append(part)
    return fhirpath(root, parts[::-1])


def check_shape(doc: dict[str, Any], root: str) -> None:
    """Refuse a body nested deeper than :data:`MAX_DEPTH` or holding a forbidden control character.

    Args:
        doc: the parsed JSON object.
        root: its resource type, the first step of FHIRPaths (``DiagnosticReport``).

    Raises:
        FhirDecodeError: ``structure`` with the FHIRPath where the nesting passes
            the limit, or ``value`` with the FHIRPath of the string (or of the
            object whose property name) holding a control character. Neither
            quotes the value.
    """
    stack: list[tuple[Any, int, _Path]] = [(doc, 1, None)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if _FORBIDDEN.search(node):
                where = _render(root, path)
                raise FhirDecodeError(
                    f"{where} holds a control character (FHIR strings allow only tab, CR and LF)",
                    issue_code="value",
                    expression=where,
                )
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            where = _render(root, path)
            raise FhirDecodeError(
                f"{where} is nested deeper than {MAX_DEPTH} levels", issue_code="structure", expression=where
            )
        # Children are pushed last first, so problems are found in document order.
        if isinstance(node, dict):
            for key in node:
                if _FORBIDDEN.search(key):
                    where = _render(root, path)
                    raise FhirDecodeError(
                        f"a property name in {where} holds a control character", issue_code="value", expression=where
                    )
            stack.extend((node[key], depth + 1, (path, key)) for key in reversed(node))
        else:
            stack.extend((node[i], depth + 1, (path, i)) for i in range(len(node) - 1, -1, -1))
