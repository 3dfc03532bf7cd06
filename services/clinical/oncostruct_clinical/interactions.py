"""The FHIR RESTful interactions (http://hl7.org/fhir/R4/http.html), independent of HTTP routing.

The routes in ``api/`` and the batch/transaction processor in ``api/bundle.py``
both call these, so an entry of a Bundle behaves exactly like the same request
sent alone (R4 §3.1.0.11.1). Each function runs in the caller's transaction
and checks the caller's SMART scope for its own interaction.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch

from oncostruct_shared.auth import insufficient_scope
from oncostruct_shared.errors import Forbidden, Invalid, NotFound, PreconditionFailed, Unprocessable

from . import repository
from .api.security import Interaction, smart_grant
from .compartment import PATIENT_COMPARTMENT, content_in_compartment, in_scope_type, members, search_criterion
from .config import Settings
from .repository import Db, StoredVersion
from .search import engine
from .search.parameters import parameters_for
from .search.query import SearchRequest, parse_search
from .summary import summary_elements
from .validation import FHIR_ID, validate_resource

#: The resource types this server stores (FHIR R4 names).
SUPPORTED_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "Medication",
        "BodyStructure",
        "ImagingStudy",
        "DiagnosticReport",
        "Specimen",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Encounter",
        "Provenance",
        "Group",
        "FamilyMemberHistory",
        "ServiceRequest",
        "Bundle",
    }
)


def compartment_params(content: dict[str, Any]) -> tuple[str, ...]:
    """The compartment parameters of a body's type (for messages)."""
    return PATIENT_COMPARTMENT.get(str(content.get("resourceType")), ("id",))


SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


@dataclass
class Context:
    """Who asks and where: the session (its transaction), settings, granted scopes, launch patient, caller."""

    session: Db
    settings: Settings
    scopes: frozenset[str]
    patient: str | None = None
    subject: str = ""

    def authorize(self, resource_type: str, interaction: Interaction) -> bool:
        """403 unless a SMART scope allows ``interaction`` on ``resource_type``.

        Returns True when only ``patient/`` scopes allow it and the type holds patient data: the
        caller must then keep the interaction inside the launch patient's compartment. Writing a
        type outside the compartment needs a ``system/`` or ``user/`` scope.
        """
        grant = smart_grant(self.scopes, resource_type, interaction, self.patient is not None)
        if grant is None or (grant == "patient" and interaction in "cud" and not in_scope_type(resource_type)):
            raise insufficient_scope(f"system/{resource_type}.{interaction}")
        return grant == "patient" and (resource_type == "*" or in_scope_type(resource_type))

    def may_read(self, resource_type: str) -> bool:
        """Whether the caller may see resources of this type (``_include`` filtering; compartment checked apart)."""
        patient = self.patient is not None
        return any(smart_grant(self.scopes, resource_type, i, patient) for i in ("r", "s"))

    async def require_member(self, resource_type: str, resource_id: str) -> None:
        """404 unless the resource is in the launch patient's compartment (its existence is not revealed)."""
        assert self.patient is not None
        if (resource_type, resource_id) not in await members(
            self.session, [(resource_type, resource_id)], self.patient
        ):
            raise NotFound(f"{resource_type}/{resource_id} is not known.")

    def require_in_compartment(self, content: dict[str, Any]) -> None:
        """403 unless a body to be written is the launch patient or references it in a compartment parameter."""
        assert self.patient is not None
        if not content_in_compartment(content, self.patient, self.settings.base_url):
            raise Forbidden(
                f"A patient/ scope writes only resources in Patient/{self.patient}'s compartment "
                f"(a {content.get('resourceType')} referencing it in {', '.join(compartment_params(content))})."
            )

    def refuse_conditional(self, restricted: bool) -> None:
        """Conditional interactions search beyond the compartment: not with patient/ scopes."""
        if restricted:
            raise Forbidden("Conditional interactions need a system/ or user/ scope, not a patient/ one.")


@dataclass
class Outcome:
    """The result of one interaction: status, the version written/read (if any), a body otherwise."""

    status: int
    version: StoredVersion | None = None
    body: dict[str, Any] | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def check_type(resource_type: str) -> None:
    """404 for types this server does not store (R4 §3.1.0.1.1 unknown resource type)."""
    if resource_type not in SUPPORTED_TYPES:
        raise NotFound(f"Resource type {resource_type!r} is not supported by this server.")


def check_id(resource_id: str) -> None:
    """400 unless ``resource_id`` is a FHIR id."""
    if not FHIR_ID.match(resource_id):
        raise Invalid(f"{resource_id!r} is not a valid FHIR id.", expression=["id"])


def _check_body(resource_type: str, content: dict[str, Any], resource_id: str | None) -> None:
    if content.get("resourceType") != resource_type:
        raise Invalid(
            f"resourceType must be {resource_type!r} here, not {content.get('resourceType')!r}.",
            expression=["resourceType"],
        )
    # R4 §3.1.0.4: the body's id must be present and equal the URL's.
    if resource_id is not None and content.get("id") != resource_id:
        raise Invalid(f"The body's id must be {resource_id!r}, as in the URL.", expression=[f"{resource_type}.id"])
    validate_resource(content)


def search_request(ctx: Context, resource_type: str, query: str | Sequence[tuple[str, str]]) -> SearchRequest:
    """Parse a search (a query string or pairs) strictly: conditions must not silently ignore criteria."""
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    return parse_search(
        resource_type,
        pairs,
        handling="strict",
        default_count=ctx.settings.search_default_count,
        max_count=ctx.settings.search_max_count,
    )


async def _conditional_matches(ctx: Context, resource_type: str, query: str) -> list[str]:
    request = search_request(ctx, resource_type, query)
    if not request.criteria:
        raise Invalid("A conditional interaction needs at least one search criterion.", expression=[query])
    await repository.lock_condition(ctx.session, f"{resource_type}?{urlencode(sorted(request.applied))}")
    return await engine.find_ids(ctx.session, resource_type, request, ctx.settings.base_url, limit=2)


async def create(
    ctx: Context,
    resource_type: str,
    content: dict[str, Any],
    if_none_exist: str | None = None,
    resource_id: str | None = None,
    *,
    alone: bool = False,
) -> Outcome:
    """Create (R4 §3.1.0.5), conditional when ``If-None-Exist`` is given (§3.1.0.8.1).

    ``alone``: the request writes nothing else (the create interaction itself, not a Bundle entry).
    """
    check_type(resource_type)
    restricted = ctx.authorize(resource_type, "c")
    _check_body(resource_type, content, None)
    if restricted:
        ctx.refuse_conditional(bool(if_none_exist))
        ctx.require_in_compartment(content)
    if if_none_exist:
        matches = await _conditional_matches(ctx, resource_type, if_none_exist)
        if len(matches) > 1:
            raise PreconditionFailed(f"If-None-Exist matched several {resource_type} resources.")
        if matches:
            version = await repository.read_resource(ctx.session, resource_type, matches[0])
            return Outcome(200, version, message=f"{resource_type}/{matches[0]} already matches If-None-Exist.")
    version = await repository.create_resource(
        ctx.session, resource_type, content, ctx.settings.base_url, resource_id=resource_id, alone=alone
    )
    return Outcome(201, version, message=f"Created {resource_type}/{version.id}.")


async def read(ctx: Context, resource_type: str, resource_id: str) -> Outcome:
    """Read (R4 §3.1.0.2): 404 unknown, 410 deleted."""
    check_type(resource_type)
    restricted = ctx.authorize(resource_type, "r")
    check_id(resource_id)
    if restricted:
        await ctx.require_member(resource_type, resource_id)
    return Outcome(200, await repository.read_resource(ctx.session, resource_type, resource_id))


async def vread(ctx: Context, resource_type: str, resource_id: str, version_id: str) -> Outcome:
    """Version read (R4 §3.1.0.3)."""
    check_type(resource_type)
    restricted = ctx.authorize(resource_type, "r")
    check_id(resource_id)
    if restricted:
        await ctx.require_member(resource_type, resource_id)
    if not version_id.isdigit():
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id!r}.")
    return Outcome(200, await repository.vread_resource(ctx.session, resource_type, resource_id, int(version_id)))


async def update(
    ctx: Context, resource_type: str, resource_id: str, content: dict[str, Any], if_match: int | None = None
) -> Outcome:
    """Update, or create with the client's id (R4 §3.1.0.4, update-as-create)."""
    check_type(resource_type)
    check_id(resource_id)
    current = await repository.read_current(ctx.session, resource_type, resource_id)
    restricted = ctx.authorize(resource_type, "u" if current is not None else "c")
    _check_body(resource_type, content, resource_id)
    if restricted:
        if current is not None:
            await ctx.require_member(resource_type, resource_id)
        ctx.require_in_compartment({**content, "id": resource_id})
    version, created = await repository.update_resource(
        ctx.session, resource_type, resource_id, content, ctx.settings.base_url, if_match=if_match
    )
    return Outcome(
        201 if created else 200,
        version,
        message=f"{'Created' if created else 'Updated'} {resource_type}/{resource_id} (version {version.version_id}).",
    )


async def conditional_update(
    ctx: Context, resource_type: str, query: str, content: dict[str, Any], if_match: int | None = None
) -> Outcome:
    """Conditional update (R4 §3.1.0.4.3): none → create, one → update it, several → 412."""
    check_type(resource_type)
    ctx.refuse_conditional(ctx.authorize(resource_type, "u"))
    matches = await _conditional_matches(ctx, resource_type, query)
    if len(matches) > 1:
        raise PreconditionFailed(f"The condition matched several {resource_type} resources.")
    if matches:
        if content.get("id") not in (None, matches[0]):
            raise Invalid(
                f"The body's id differs from the matching {resource_type}/{matches[0]}.",
                expression=[f"{resource_type}.id"],
            )
        return await update(ctx, resource_type, matches[0], {**content, "id": matches[0]}, if_match)
    if content.get("id"):
        return await update(ctx, resource_type, str(content["id"]), content, if_match)
    return await create(ctx, resource_type, content)


async def patch(
    ctx: Context, resource_type: str, resource_id: str, operations: list[dict[str, Any]], if_match: int | None = None
) -> Outcome:
    """JSON Patch (R4 §3.1.0.6): applied to the current version, the result validated like an update."""
    check_type(resource_type)
    if ctx.authorize(resource_type, "u"):
        await ctx.require_member(resource_type, resource_id)
    check_id(resource_id)
    current = await repository.read_resource(ctx.session, resource_type, resource_id)
    try:
        patched = jsonpatch.apply_patch(copy.deepcopy(current.require_live()), operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError) as exc:
        raise Unprocessable(f"The JSON Patch cannot be applied: {exc}.") from None
    if not isinstance(patched, dict):
        raise Unprocessable("The JSON Patch does not leave a resource.")
    return await update(ctx, resource_type, resource_id, patched, if_match)


async def conditional_patch(
    ctx: Context, resource_type: str, query: str, operations: list[dict[str, Any]], if_match: int | None = None
) -> Outcome:
    """Conditional patch (R4 §3.1.0.6): exactly one match is patched, else 404/412."""
    check_type(resource_type)
    ctx.refuse_conditional(ctx.authorize(resource_type, "u"))
    matches = await _conditional_matches(ctx, resource_type, query)
    if not matches:
        raise NotFound(f"No {resource_type} matches the condition.")
    if len(matches) > 1:
        raise PreconditionFailed(f"The condition matched several {resource_type} resources.")
    return await patch(ctx, resource_type, matches[0], operations, if_match)


async def delete(ctx: Context, resource_type: str, resource_id: str, if_match: int | None = None) -> Outcome:
    """Delete (R4 §3.1.0.7): a new, deleted version; deleting nothing is not an error."""
    check_type(resource_type)
    restricted = ctx.authorize(resource_type, "d")
    check_id(resource_id)
    if restricted:
        await ctx.require_member(resource_type, resource_id)
    version = await repository.delete_resource(
        ctx.session, resource_type, resource_id, ctx.settings.base_url, if_match=if_match
    )
    if version is None:
        return Outcome(204, message=f"{resource_type}/{resource_id} did not exist or was already deleted.")
    return Outcome(204, version, message=f"Deleted {resource_type}/{resource_id} (version {version.version_id}).")


async def conditional_delete(ctx: Context, resource_type: str, query: str) -> Outcome:
    """Conditional delete (R4 §3.1.0.7.1), single-match mode: several matches → 412."""
    check_type(resource_type)
    ctx.refuse_conditional(ctx.authorize(resource_type, "d"))
    matches = await _conditional_matches(ctx, resource_type, query)
    if len(matches) > 1:
        raise PreconditionFailed(f"The condition matched several {resource_type} resources.")
    if not matches:
        return Outcome(204, message=f"No {resource_type} matched; nothing deleted.")
    return await delete(ctx, resource_type, matches[0])


# --- search ---------------------------------------------------------------------------------------------------


def summarize(content: dict[str, Any], summary: str | None, elements: list[str] | None) -> dict[str, Any]:
    """Apply ``_summary``/``_elements`` (R4 §3.1.1.5.8-9), tagging the result SUBSETTED."""
    if summary in (None, "false") and not elements:
        return content
    resource_type = content["resourceType"]
    if summary == "data":
        kept = {k: v for k, v in content.items() if k != "text"}
    else:
        keep: set[str] = {"resourceType", "id", "meta"}
        if summary == "text":
            keep |= {"text", *summary_elements(resource_type, mandatory_only=True)}
        elif summary == "true":
            keep |= summary_elements(resource_type, mandatory_only=False)
        if elements:
            keep |= set(elements) | summary_elements(resource_type, mandatory_only=True)
        kept = {k: v for k, v in content.items() if k in keep or _choice_base(k) in keep}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def _choice_base(key: str) -> str:
    for i in range(1, len(key)):
        if key[i].isupper():
            return key[:i]
    return key


def bundle_links(
    base: str, resource_type: str, request: SearchRequest, page: engine.SearchPage
) -> list[dict[str, str]]:
    """``self``/``next``/``previous`` links; only applied parameters are echoed (R4 §3.1.1.3)."""
    applied = list(request.applied)
    url = f"{base}/{resource_type}"

    def link(cursor: str | None) -> str:
        pairs = applied + ([("_cursor", cursor)] if cursor else [])
        return f"{url}?{urlencode(pairs)}" if pairs else url

    links = [{"relation": "self", "url": link(request.cursor)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": link(page.next_cursor)})
    if page.previous_cursor:
        links.append({"relation": "previous", "url": link(page.previous_cursor)})
    return links


async def search(ctx: Context, resource_type: str, params: Sequence[tuple[str, str]], handling: str) -> Outcome:
    """Search (R4 §3.1.1): a searchset Bundle of one page, with includes and links."""
    check_type(resource_type)
    restricted = ctx.authorize(resource_type, "s")
    # Reverse chains and chains reach other resources than the ones searched: not with patient/ scopes.
    chained = any(name.startswith("_has") or "." in name for name, _ in params)
    if chained and ctx.patient is not None and smart_grant(ctx.scopes, resource_type, "s") != "all":
        raise Forbidden("_has and chained parameters need a system/ or user/ scope, not a patient/ one.")
    if restricted:
        assert ctx.patient is not None
        if resource_type != "Patient" and resource_type not in PATIENT_COMPARTMENT:
            raise Forbidden(f"{resource_type} resources can hold any patient's data: not with patient/ scopes.")
        params = [search_criterion(resource_type, ctx.patient), *params]  # stays inside the compartment
    request = parse_search(
        resource_type,
        params,
        handling="strict" if handling == "strict" else "lenient",
        default_count=ctx.settings.search_default_count,
        max_count=ctx.settings.search_max_count,
    )
    total_mode = request.total or ctx.settings.search_default_total
    want_total = request.summary == "count" or (total_mode != "none" and not request.cursor)
    page = await engine.run_search(
        ctx.session,
        request,
        ctx.settings.base_url,
        may_read=ctx.may_read,
        include_iterations=ctx.settings.search_include_iterations,
        max_included=ctx.settings.search_max_included,
        want_total=want_total,
    )
    if ctx.patient is not None and page.included:  # included resources of other patients stay out
        allowed = await members(ctx.session, [(f.resource_type, f.id) for f in page.included], ctx.patient)
        full = {t for t in {f.resource_type for f in page.included} if smart_grant(ctx.scopes, t, "r") == "all"}
        page.included = [f for f in page.included if f.resource_type in full or (f.resource_type, f.id) in allowed]
    base = ctx.settings.base_url
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = bundle_links(base, resource_type, request, page)
    entries = [
        {
            "fullUrl": f"{base}/{found.resource_type}/{found.id}",
            "resource": summarize(found.content, request.summary, request.elements),
            "search": {"mode": found.mode},
        }
        for found in [*page.matches, *page.included]
    ]
    if entries:
        bundle["entry"] = entries
    return Outcome(200, body=bundle)


def searchable_parameters(resource_type: str) -> list[tuple[str, str, str]]:
    """(code, type, definition URL) of every search parameter supported on ``resource_type``."""
    common = [
        ("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id"),
        ("_lastUpdated", "date", "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"),
    ]
    rest = [
        (p.code, p.type, p.url) for p in parameters_for(resource_type).values() if p.code not in ("_id", "_lastUpdated")
    ]
    return common + sorted(rest)


def last_modified_after(version: StoredVersion, since: datetime | None) -> bool:
    """Whether ``version`` changed after ``since`` (``If-Modified-Since``; HTTP dates have whole seconds)."""
    return since is None or version.last_updated.replace(microsecond=0) > since
