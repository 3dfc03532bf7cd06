"""Structural validation of FHIR R4 (4.0.1) resources on every write.

Validator choice: the R4 model classes of ``fhirclient`` 4.x (SMART on FHIR,
generated from the official R4 4.0.1 StructureDefinitions). They check, per
element, the data type (and primitive formats such as date/dateTime/instant),
list-vs-single cardinality, required (min = 1) elements, choice types
(``value[x]``) and unknown elements (no superfluous keys), and they report
the path of each failure. Why this and not the alternatives:

- ``fhir.resources`` 8.x models R5 (and R4B), not R4: genuine R4 content is
  rejected or silently reinterpreted; its R4 releases (6.x) need pydantic 1,
  which would break the shared pydantic 2 stack.
- The R4 JSON schema/StructureDefinitions from ``hl7.fhir.r4.core`` are not on
  the npm registry the build may use, and JSON-schema validation of FHIR does
  not check required elements.
- ``fhirclient`` is pure Python, has no pydantic dependency, round-trips every
  published mCODE 4.0.0 example unchanged and costs well under a millisecond
  per resource.

On top of the models this module checks what they leave out: ``id`` syntax
(R4 §2.24.0.1 id: ``[A-Za-z0-9\\-\\.]{1,64}``) and the R4 required value set
of a few codes the oncology record relies on. References are checked by the
repository (they must be relative ``Type/id``, absolute URLs, ``#contained``,
or ``urn:uuid:``/``urn:oid:`` inside transactions).
"""

from __future__ import annotations

import re
from typing import Any

from fhirclient.models import fhirelementfactory
from fhirclient.models.fhirabstractbase import FHIRValidationError

from oncostruct_shared.errors import Invalid

#: R4 §2.24.0.1 (datatypes.html#id).
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: Reference.reference forms this server accepts (http://hl7.org/fhir/R4/references.html#literal).
_REFERENCE = re.compile(
    r"^(#.*|[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?"
    r"|[a-z][a-z0-9+.\-]*:.+|[A-Z][A-Za-z]+\?.*)$"
)
#: Required bindings (R4) checked beyond the models, by element path.
_REQUIRED_CODES: dict[str, frozenset[str]] = {
    "Patient.gender": frozenset({"male", "female", "other", "unknown"}),
    "Observation.status": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
}


def _leaf_problems(error: BaseException, path: list[str]) -> list[tuple[str, str]]:
    if isinstance(error, FHIRValidationError):
        here = [*path, *([error.path] if error.path else [])]
        found: list[tuple[str, str]] = []
        for inner in error.errors:
            found += _leaf_problems(inner, here)
        return found or [(".".join(here), str(error))]
    return [(".".join(path), str(error).strip("'\""))]


def _fhirpath(resource_type: str, dotted: str) -> str:
    # fhirclient writes list positions as ".0"; FHIRPath writes "[0]".
    expression = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", dotted)
    return f"{resource_type}.{expression}" if expression else resource_type


def _message(text: str) -> str:
    text = re.sub(r" on <[^>]+>", "", text)
    text = re.sub(r" (in data )?for <[^>]+>", "", text)
    return re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)


def check_references(value: Any, path: str, problems: list[tuple[str, str]], references: bool = True) -> None:
    """Collect references whose ``reference`` text is not a FHIR literal reference (not in contained
    resources), and strings holding a NUL anywhere (R4 strings exclude control characters; PostgreSQL
    cannot store that one)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if references and key == "reference" and isinstance(item, str) and not _REFERENCE.match(item):
                problems.append((f"{path}.reference", f"malformed reference {item[:80]!r}"))
            else:
                check_references(item, f"{path}.{key}", problems, references and key != "contained")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_references(item, f"{path}[{i}]", problems, references)
    elif isinstance(value, str) and "\x00" in value:
        problems.append((path, "a string holds a NUL control character"))


def validate_resource(content: dict[str, Any]) -> None:
    """Raise :class:`Invalid` (400) naming every element that breaks the R4 structure.

    The caller has already checked ``resourceType`` against the URL.
    """
    resource_type = content.get("resourceType")
    if not isinstance(resource_type, str):
        raise Invalid("The resource has no resourceType.", expression=["resourceType"])
    problems: list[tuple[str, str]] = []
    try:
        fhirelementfactory.FHIRElementFactory.instantiate(resource_type, content)
    except FHIRValidationError as error:
        for path, text in _leaf_problems(error, []):
            # Name the element itself when the message does (unknown or missing elements).
            named = re.search(r'(?:Superfluous entry|Non-optional property) "(\w+)"', text)
            where = f"{path}.{named[1]}" if named and path else (named[1] if named else path)
            problems.append((_fhirpath(resource_type, where), _message(text)))
    except Exception as error:
        problems = [(resource_type, _message(str(error)))]
    resource_id = content.get("id")
    if resource_id is not None and not (isinstance(resource_id, str) and FHIR_ID.match(resource_id)):
        problems.append((f"{resource_type}.id", "not a valid FHIR id ([A-Za-z0-9-.]{1,64})"))
    for path, codes in _REQUIRED_CODES.items():
        element = path.split(".", 1)[1]
        if path.startswith(f"{resource_type}.") and element in content and content[element] not in codes:
            problems.append((path, f"{content[element]!r} is not in the required value set"))
    reference_problems: list[tuple[str, str]] = []
    check_references(content, resource_type, reference_problems)
    problems += reference_problems
    if problems:
        detail = "; ".join(f"{path}: {text}" for path, text in problems[:20])
        raise Invalid(
            f"The {resource_type} is not valid FHIR R4: {detail}.",
            expression=list(dict.fromkeys(path for path, _ in problems[:20])),
        )
