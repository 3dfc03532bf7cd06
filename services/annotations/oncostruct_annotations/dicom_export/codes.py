"""Coded concepts between the label schema (FHIR-style ``system`` URIs) and DICOM code sequences.

A schema concept carries a ``system`` URI (``http://snomed.info/sct``); a DICOM
Code Sequence item carries a Coding Scheme Designator (``SCT``), PS3.3 §8.2 and
PS3.16 §8 (Coding Schemes). Local systems get a private designator beginning
with ``99`` (PS3.3 §8.2: designators beginning with "99" are private), declared in
the SOP Common Module's Coding Scheme Identification Sequence (PS3.3 §C.12.1) with
the system URI as its Coding Scheme URL, so that a reader — ours included — can
map the designator back to the system.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.coding import Code

from oncostruct_shared.errors import Unprocessable

from ..vocabulary import LOCAL, LOINC, SNOMED, Concept

DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
RADLEX = "http://www.radlex.org"
NCIT = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"

#: System URI → Coding Scheme Designator (PS3.16 §8). Local systems get ``99``-prefixed designators.
DEFAULT_DESIGNATORS: Mapping[str, str] = {
    SNOMED: "SCT",
    LOINC: "LN",
    RADLEX: "RADLEX",
    "http://radlex.org": "RADLEX",
    "http://radlex.org/RID": "RADLEX",
    DCM: "DCM",
    UCUM: "UCUM",
    NCIT: "NCIt",
    LOCAL: "99ONCO",
}

#: Designator → system URI when reading objects made elsewhere (``SRT`` is SNOMED's retired designator).
DEFAULT_SYSTEMS: Mapping[str, str] = {
    "SCT": SNOMED,
    "SRT": SNOMED,
    "LN": LOINC,
    "RADLEX": RADLEX,
    "DCM": DCM,
    "UCUM": UCUM,
    "NCIt": NCIT,
    "99ONCO": LOCAL,
}

#: Names written in the Coding Scheme Identification Sequence for private designators.
PRIVATE_SCHEME_NAMES: Mapping[str, str] = {"99ONCO": "OncoStruct local codes"}

# A system that is already a designator (no scheme, at most 16 characters: SH) is used as given.
_DESIGNATOR = re.compile(r"^[A-Za-z0-9_.\-]{1,16}$")
_MEANING_MAX = 64  # Code Meaning is LO (PS3.5 §6.2)

# Concepts the builders write (PS3.16 CID 7150 categories, CID 7469 sizes, CID 230 yes/no).
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Concept(
    system=SNOMED, code="49755003", display="Morphologically abnormal structure"
)
AREA = Concept(system=SNOMED, code="42798000", display="Area")
LENGTH = Concept(system=SNOMED, code="410668003", display="Length")
VOLUME = Concept(system=SNOMED, code="118565006", display="Volume")
YES = Concept(system=SNOMED, code="373066001", display="Yes")
NO = Concept(system=SNOMED, code="373067005", display="No")
IMAGING_PROCEDURE = Concept(system=SNOMED, code="363679005", display="Imaging procedure")

_UCUM_MEANINGS = {"mm": "millimeter", "cm": "centimeter", "mm2": "square millimeter", "mm3": "cubic millimeter",
                  "ml": "milliliter", "mL": "milliliter", "cm3": "cubic centimeter", "[hnsf'U]": "Hounsfield unit",
                  "%": "percent", "1": "no units", "{ratio}": "ratio"}  # fmt: skip

# Namespace of the UUIDs behind tracking UIDs of tracked lesions (PS3.5 §B.2: "2.25." + UUID as an integer).
_TRACKING_NAMESPACE = uuid.UUID("3f0cc0a4-5c1b-4a53-9f27-6d2a4a3e0b7e")


def designator_of(system: str, designators: Mapping[str, str] = DEFAULT_DESIGNATORS) -> str:
    """The Coding Scheme Designator for a schema ``system``.

    Parameters
    ----------
    system
        The concept's system URI, or a designator itself (``99MYLAB``).
    designators
        System URI → designator; :data:`DEFAULT_DESIGNATORS` by default.

    Returns
    -------
    str
        The designator (SH, at most 16 characters).

    Raises
    ------
    Unprocessable
        If the system has no designator: PS3.3 §8.2 needs one for every code.
    """
    designator = designators.get(system) or designators.get(system.rstrip("/"))
    if designator is not None:
        return designator
    if _DESIGNATOR.match(system):
        return system
    raise Unprocessable(
        f"Coding system {system!r} has no DICOM Coding Scheme Designator (PS3.16 §8); "
        "map it to one (a private one begins with '99')."
    )


def check_systems(concepts: Iterable[Concept], designators: Mapping[str, str] = DEFAULT_DESIGNATORS) -> None:
    """Raise one :class:`Unprocessable` naming every system of ``concepts`` that has no designator."""
    unknown = sorted({c.system for c in concepts if c.system not in designators and not _DESIGNATOR.match(c.system)})
    if unknown:
        raise Unprocessable(
            f"Coding systems without a DICOM Coding Scheme Designator (PS3.16 §8): {', '.join(unknown)}; "
            "map each to one (a private one begins with '99')."
        )


def coded(concept: Concept, designators: Mapping[str, str] = DEFAULT_DESIGNATORS) -> hd.sr.CodedConcept:
    """The DICOM code (PS3.3 §8.8, Code Sequence Macro) of a schema concept.

    Codes longer than 16 characters go to Long Code Value (or URN Code Value), as
    highdicom does; a display longer than 64 characters is cut to fit Code Meaning (LO).
    """
    meaning = concept.display if len(concept.display) <= _MEANING_MAX else concept.display[: _MEANING_MAX - 1] + "…"
    return hd.sr.CodedConcept(concept.code, designator_of(concept.system, designators), meaning)


def unit_code(unit: str) -> hd.sr.CodedConcept:
    """The UCUM code of a unit (measurement units are UCUM in DICOM, designator ``UCUM``, PS3.3 §8.2)."""
    return hd.sr.CodedConcept(unit, "UCUM", _UCUM_MEANINGS.get(unit, unit))


def concept_of(code: Code | Dataset, systems: Mapping[str, str] = DEFAULT_SYSTEMS) -> Concept:
    """The schema concept of a DICOM code; a designator without a known system stays the system."""
    if isinstance(code, Dataset):
        value = str(code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue"))
        designator, meaning = str(code.CodingSchemeDesignator), str(code.CodeMeaning)
    else:
        value, designator, meaning = str(code.value), str(code.scheme_designator), str(code.meaning)
    return Concept(system=systems.get(designator, designator), code=value, display=meaning or value)


def same_concept(a: Concept, b: Concept) -> bool:
    """Whether two concepts are the same code of the same system (displays may differ)."""
    return a.system == b.system and a.code == b.code


def systems_declared_in(dataset: Dataset, systems: Mapping[str, str] = DEFAULT_SYSTEMS) -> dict[str, str]:
    """``systems`` plus the private designators a dataset declares with a Coding Scheme URL (PS3.3 §C.12.1)."""
    found = dict(systems)
    for item in dataset.get("CodingSchemeIdentificationSequence", []):
        for resource in item.get("CodingSchemeResourcesSequence", []):
            if resource.get("CodingSchemeURL"):
                found[str(item.CodingSchemeDesignator)] = str(resource.CodingSchemeURL)
    return found


def declare_private_schemes(
    dataset: Dataset,
    concepts: Iterable[Concept],
    designators: Mapping[str, str] = DEFAULT_DESIGNATORS,
    names: Mapping[str, str] = PRIVATE_SCHEME_NAMES,
) -> None:
    """Add the Coding Scheme Identification Sequence for the private (``99``) designators used.

    SOP Common Module (PS3.3 §C.12.1): the sequence identifies coding schemes not listed in PS3.16 §8;
    the system URI is written as Coding Scheme URL (URL type ``DOC``: the enumerated
    types DOC, OWL, CSV have none for a FHIR code system URI).
    """
    private: dict[str, str] = {}
    for concept in concepts:
        designator = designator_of(concept.system, designators)
        if designator.startswith("99"):
            private.setdefault(designator, concept.system)
    items = []
    for designator, system in sorted(private.items()):
        item = Dataset()
        item.CodingSchemeDesignator = designator
        item.CodingSchemeName = names.get(designator, f"Private codes {designator}")[:64]
        item.CodingSchemeResponsibleOrganization = "OncoStruct"
        if system != designator:
            resource = Dataset()
            resource.CodingSchemeURLType = "DOC"
            resource.CodingSchemeURL = system
            item.CodingSchemeResourcesSequence = DicomSequence([resource])
        items.append(item)
    if items:
        dataset.CodingSchemeIdentificationSequence = DicomSequence(items)


def tracking_uid(tracking_id: str | None, annotation_id: uuid.UUID, scope: str) -> str:
    """The Tracking UID of an ROI (TID 1410/1411/1501 "Tracking Unique Identifier"; SEG Tracking UID).

    A tracked lesion (``tracking_id`` set) keeps one UID in every study: a UUID-5 of
    ``scope`` and the tracking id, written as ``2.25.<integer>`` (PS3.5 §B.2). ``scope``
    must tell patients apart (e.g. ``"<project id>/<patient id>"``) so that two patients'
    ``lesion-1`` differ. An untracked ROI gets ``2.25.<annotation id as integer>``.
    """
    if tracking_id:
        return f"2.25.{uuid.uuid5(_TRACKING_NAMESPACE, scope + chr(0) + tracking_id).int}"
    return f"2.25.{annotation_id.int}"


def series_tracking_uid(series_instance_uid: str) -> str:
    """The Tracking UID of the measurement group that holds a series' labels (stable per series)."""
    return f"2.25.{uuid.uuid5(_TRACKING_NAMESPACE, 'series' + chr(0) + series_instance_uid).int}"


def device_uid(name: str) -> str:
    """A stable Device Observer UID for a model name (``name@version``), PS3.5 §B.2."""
    return f"2.25.{uuid.uuid5(_TRACKING_NAMESPACE, 'device' + chr(0) + name).int}"
