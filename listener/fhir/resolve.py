"""JSON accessors and reference resolution for validated FHIR bodies.

Pure: no I/O, no clock. The decoder reads the JSON after fhir.resources has
validated it (so shapes are right); these helpers still never assume a shape,
so a surprise gives "" or None rather than an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

_TYPE_ID = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/+([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def str_of(obj: object, key: str) -> str:
    """``obj[key]`` as a stripped string ("" when absent or not a scalar)."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value).strip()
    return ""


def obj_of(obj: object, key: str) -> JSON:
    """``obj[key]`` as an object ({} when absent)."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, dict):
            return value
    return {}


def objs(obj: object, key: str) -> list[JSON]:
    """``obj[key]`` as a list of objects (a single object is a list of one: STU3 shapes)."""
    if not isinstance(obj, dict):
        return []
    value = obj.get(key)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def strs(obj: object, key: str) -> list[str]:
    """``obj[key]`` as a list of strings."""
    if not isinstance(obj, dict):
        return []
    value = obj.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def codings(concept: JSON) -> list[JSON]:
    """The codings of a CodeableConcept (or of a CodeableReference's concept)."""
    if "concept" in concept and "coding" not in concept:
        concept = obj_of(concept, "concept")
    return objs(concept, "coding")


def concept_text(concept: JSON) -> str:
    """A CodeableConcept's text, else its first display, else its first code."""
    if "concept" in concept and "coding" not in concept:
        concept = obj_of(concept, "concept")
    text = str_of(concept, "text")
    if text:
        return text
    for coding in objs(concept, "coding"):
        if str_of(coding, "display"):
            return str_of(coding, "display")
    for coding in objs(concept, "coding"):
        if str_of(coding, "code"):
            return str_of(coding, "code")
    return ""


def identifier_type_codes(ident: JSON) -> set[str]:
    """Upper-cased type codes of an Identifier (v2-0203 ACSN, FILL, PLAC, MR...)."""
    return {str_of(c, "code").upper() for c in codings(obj_of(ident, "type")) if str_of(c, "code")}


def identifier_of_type(idents: list[JSON], type_code: str) -> JSON | None:
    """The first Identifier with a value whose type is ``type_code``."""
    for ident in idents:
        if str_of(ident, "value") and type_code in identifier_type_codes(ident):
            return ident
    return None


@dataclass(slots=True)
class Index:
    """Resources of one body by every name a reference may use.

    Keys: ``fullUrl`` (``urn:uuid:...`` or absolute), ``Type/id``, and for
    contained resources ``#id`` in a per-container map.
    """

    by_key: dict[str, JSON] = field(default_factory=dict)

    def add(self, resource: JSON, full_url: str = "") -> None:
        """Index one resource under its fullUrl and ``Type/id``."""
        if full_url:
            self.by_key[full_url] = resource
            match = _TYPE_ID.search(full_url)
            if match:
                self.by_key.setdefault(f"{match.group(1)}/{match.group(2)}", resource)
        rid, rtype = str_of(resource, "id"), str_of(resource, "resourceType")
        if rid and rtype:
            self.by_key.setdefault(f"{rtype}/{rid}", resource)

    def resolve(self, reference: JSON, contained: dict[str, JSON]) -> tuple[JSON | None, bool]:
        """The resource a Reference points at, and whether its spelling was irregular.

        ``#id`` looks in ``contained``; ``Type/id``, ``urn:uuid:...`` and absolute
        URLs look in the body. ``Type//id`` (seen in real examples) is read as
        ``Type/id`` and reported as irregular. Returns (None, False) when the
        resource is not in the body: it is not fetched.
        """
        ref = str_of(reference, "reference")
        if not ref:
            return None, False
        if ref.startswith("#"):
            return contained.get(ref[1:]), False
        if ref in self.by_key:
            return self.by_key[ref], False
        match = _TYPE_ID.search(ref)
        if match:
            key = f"{match.group(1)}/{match.group(2)}"
            irregular = "//" in ref.split("://", 1)[-1]
            return self.by_key.get(key), irregular
        return None, False


def distinct(resources: Iterable[JSON]) -> list[JSON]:
    """``resources`` in order, each object once (n references to one resource resolve to it n times)."""
    seen: set[int] = set()
    out: list[JSON] = []
    for resource in resources:
        if id(resource) not in seen:
            seen.add(id(resource))
            out.append(resource)
    return out


def contained_map(resource: JSON) -> dict[str, JSON]:
    """A resource's contained resources by id."""
    return {str_of(c, "id"): c for c in objs(resource, "contained") if str_of(c, "id")}


def walk_entries(bundle: JSON) -> Iterator[tuple[int, str, JSON]]:
    """(index, fullUrl, resource) for each Bundle entry that has a resource."""
    for i, entry in enumerate(objs(bundle, "entry")):
        resource = obj_of(entry, "resource")
        if resource:
            yield i, str_of(entry, "fullUrl"), resource
