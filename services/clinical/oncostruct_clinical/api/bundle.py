"""Batch and transaction Bundles (R4 §3.1.0.11, http://hl7.org/fhir/R4/http.html#transaction).

A transaction runs every entry in one database transaction: the first
failing entry aborts and rolls back all of them, and the error names the entry.
Entries run in the order §3.1.0.11.2 prescribes (DELETE, POST, PUT/PATCH,
GET); before any write, ids are assigned to ``POST`` entries, conditional
creates/updates are resolved, and every reference to an entry's ``fullUrl``
(``urn:uuid:``…) or a conditional reference (``Patient?identifier=…``) is
rewritten to the resolved ``Type/id``. A batch runs each entry on its own
savepoint and reports each entry's own outcome.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid, NotFound, OncoStructError, PayloadTooLarge, PreconditionFailed

from .. import interactions
from ..deps import ContextDep
from ..interactions import Context, Outcome
from ..repository import fhir_instant
from ..search import engine
from .fhir_http import fhir_response, negotiate, parse_etag, read_resource_body, return_preference, weak_etag

router = APIRouter(tags=["FHIR batch and transaction"])

#: R4 §3.1.0.11.2 processing order of a transaction.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}


@dataclass
class Entry:
    """One Bundle entry's request, parsed."""

    index: int
    method: str
    url: str
    path: list[str]
    query: str
    resource: dict[str, Any] | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None


def _parse_entries(bundle: dict[str, Any], max_entries: int) -> list[Entry]:
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise Invalid("Bundle.entry must be a list.", expression=["Bundle.entry"])
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; at most {max_entries} are accepted.")
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{index}]"
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str) or not request.get("url"):
            raise Invalid(f"{where}.request needs a method and a url.", expression=[f"{where}.request"])
        method = request["method"].upper()
        if method not in _ORDER:
            raise Invalid(
                f"{where}.request.method {method!r} is not supported.", expression=[f"{where}.request.method"]
            )
        split = urlsplit(str(request["url"]))
        path = [p for p in split.path.split("/") if p]
        if not path:
            raise Invalid(f"{where}.request.url names no resource type.", expression=[f"{where}.request.url"])
        resource = raw.get("resource")
        if resource is not None and not isinstance(resource, dict):
            raise Invalid(f"{where}.resource must be an object.", expression=[f"{where}.resource"])
        if method in ("POST", "PUT") and resource is None:
            raise Invalid(f"{where} needs a resource for {method}.", expression=[f"{where}.resource"])
        entries.append(
            Entry(
                index=index,
                method=method,
                url=str(request["url"]),
                path=path,
                query=split.query,
                resource=resource,
                full_url=_text(raw.get("fullUrl"), f"{where}.fullUrl"),
                if_none_exist=_text(request.get("ifNoneExist"), f"{where}.request.ifNoneExist"),
                if_match=parse_etag(_text(request.get("ifMatch"), f"{where}.request.ifMatch")),
            )
        )
    return entries


def _text(value: Any, where: str) -> str | None:
    """A Bundle string element, or None; :class:`Invalid` for any other JSON type."""
    if value is None or isinstance(value, str):
        return value
    raise Invalid(f"{where} must be a string.", expression=[where])


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, mapping))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, mapping) for item in value]
    if isinstance(value, str) and value.startswith("urn:uuid:") and value in mapping:
        return mapping[value]
    return value


def _conditional_references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and "?" in item and "/" not in item.split("?")[0]:
                found.add(item)
            else:
                _conditional_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _conditional_references(item, found)


async def _resolve_one(ctx: Context, resource_type: str, query: str) -> str | None:
    # A condition searches the whole server: it needs a search scope, and not a patient/ one.
    ctx.refuse_conditional(ctx.authorize(resource_type, "s"))
    request = interactions.search_request(ctx, resource_type, query)
    matches = await engine.find_ids(ctx.session, resource_type, request, ctx.settings.base_url, limit=2)
    if len(matches) > 1:
        raise PreconditionFailed(f"{resource_type}?{query} matches several resources.")
    return matches[0] if matches else None


async def _plan_transaction(ctx: Context, entries: list[Entry]) -> dict[str, str]:
    """Assign ids and resolve conditions; returns fullUrl/conditional reference → ``Type/id``."""
    mapping: dict[str, str] = {}
    for entry in entries:
        resource_type = entry.path[0]
        if entry.method == "POST" and entry.resource is not None:
            interactions.check_type(resource_type)
            existing = None
            if entry.if_none_exist:
                existing = await _resolve_one(ctx, resource_type, entry.if_none_exist)
            target = existing or str(uuid.uuid4())
            entry.resource = {**entry.resource, "id": target}
            if existing:
                entry.method, entry.path = "NOOP", [resource_type, existing]
            if entry.full_url:
                mapping[entry.full_url] = f"{resource_type}/{target}"
        elif entry.method == "PUT" and entry.resource is not None:
            if len(entry.path) == 1 and entry.query:
                matched = await _resolve_one(ctx, resource_type, entry.query)
                target = matched or str(entry.resource.get("id") or uuid.uuid4())
                entry.path, entry.query = [resource_type, target], ""
                entry.resource = {**entry.resource, "id": target}
            if entry.full_url and len(entry.path) == 2:
                mapping[entry.full_url] = f"{entry.path[0]}/{entry.path[1]}"
    conditional: set[str] = set()
    for entry in entries:
        _conditional_references(entry.resource, conditional)
    for reference in conditional:
        resource_type, _, query = reference.partition("?")
        interactions.check_type(resource_type)
        matched = await _resolve_one(ctx, resource_type, query)
        if matched is None:
            raise PreconditionFailed(f"The conditional reference {reference!r} matches no resource.")
        mapping[reference] = f"{resource_type}/{matched}"
    for entry in entries:
        if entry.resource is not None:
            entry.resource = _rewrite(entry.resource, mapping)
    return mapping


async def _execute(ctx: Context, entry: Entry, transaction: bool) -> Outcome:
    resource_type = entry.path[0]
    if entry.method == "NOOP":
        version = await interactions.read(ctx, resource_type, entry.path[1])
        return Outcome(200, version.version, message="Matched If-None-Exist.")
    if entry.method == "POST":
        if len(entry.path) != 1:
            raise Invalid(f"POST {entry.url} is not a create.")
        assert entry.resource is not None
        if transaction:
            return await interactions.create(ctx, resource_type, entry.resource, resource_id=entry.resource["id"])
        return await interactions.create(ctx, resource_type, entry.resource, entry.if_none_exist)
    if entry.method == "PUT":
        assert entry.resource is not None
        if len(entry.path) == 1:
            return await interactions.conditional_update(
                ctx, resource_type, entry.query, entry.resource, entry.if_match
            )
        return await interactions.update(ctx, resource_type, entry.path[1], entry.resource, entry.if_match)
    if entry.method == "PATCH":
        operations = _patch_operations(entry)
        if len(entry.path) == 1:
            return await interactions.conditional_patch(ctx, resource_type, entry.query, operations, entry.if_match)
        return await interactions.patch(ctx, resource_type, entry.path[1], operations, entry.if_match)
    if entry.method == "DELETE":
        if len(entry.path) == 1:
            return await interactions.conditional_delete(ctx, resource_type, entry.query)
        return await interactions.delete(ctx, resource_type, entry.path[1], entry.if_match)
    # GET / HEAD
    if len(entry.path) == 1:
        return await interactions.search(ctx, resource_type, parse_qsl(entry.query, keep_blank_values=True), "lenient")
    if len(entry.path) == 2:
        return await interactions.read(ctx, resource_type, entry.path[1])
    if len(entry.path) == 4 and entry.path[2] == "_history":
        return await interactions.vread(ctx, resource_type, entry.path[1], entry.path[3])
    raise NotFound(f"GET {entry.url} is not supported inside a Bundle.")


def _patch_operations(entry: Entry) -> list[dict[str, Any]]:
    # R4 §3.1.0.11: a JSON Patch travels in a Binary resource (base64 data).
    resource = entry.resource or {}
    if resource.get("resourceType") != "Binary" or not isinstance(resource.get("data"), str):
        raise Invalid("A PATCH entry carries its JSON Patch as a Binary resource.")
    try:
        operations = json.loads(base64.b64decode(resource["data"]))
    except ValueError:
        raise Invalid("The Binary of a PATCH entry is not a JSON Patch document.") from None
    if not isinstance(operations, list):
        raise Invalid("A JSON Patch document is an array of operations.")
    return operations


def _response_entry(outcome: Outcome, ctx: Context, preference: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": f"{outcome.status} {_REASONS.get(outcome.status, '')}".strip()}
    entry: dict[str, Any] = {"response": response}
    version = outcome.version
    if version is not None:
        url = f"{version.resource_type}/{version.id}"
        entry["fullUrl"] = f"{ctx.settings.base_url}/{url}"
        response["location"] = f"{url}/_history/{version.version_id}"
        response["etag"] = weak_etag(version.version_id)
        response["lastModified"] = fhir_instant(version.last_updated)
        if version.content is not None and preference == "representation":
            entry["resource"] = version.content
    elif outcome.body is not None:
        entry["resource"] = outcome.body
    if preference == "OperationOutcome" and outcome.message:
        response["outcome"] = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "information", "code": "informational", "diagnostics": outcome.message}],
        }
    return entry


def _error_entry(error: OncoStructError) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": error.fhir_code, "diagnostics": error.detail}
    if error.expression:
        issue["expression"] = error.expression
    return {
        "response": {
            "status": f"{error.status} {error.title}",
            "outcome": {"resourceType": "OperationOutcome", "issue": [issue]},
        }
    }


def _in_entry(error: OncoStructError, entry: Entry) -> OncoStructError:
    where = f"Bundle.entry[{entry.index}]"
    expression = [f"{where}.resource.{e.split('.', 1)[1]}" if "." in e else where for e in error.expression]
    return type(error)(
        f"{where} ({entry.method} {entry.url}) failed, so the transaction was rolled back: {error.detail}",
        expression=expression or [where],
        headers=error.headers,
    )


@router.post("/", response_class=Response)
async def batch_or_transaction(request: Request, ctx: ContextDep) -> Response:
    """Process a batch or transaction Bundle (FHIR batch/transaction interaction)."""
    negotiate(request)
    bundle = await read_resource_body(request)
    if bundle.get("resourceType") != "Bundle":
        raise Invalid("POST to the base takes a Bundle.", expression=["resourceType"])
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise Invalid("Bundle.type must be batch or transaction here.", expression=["Bundle.type"])
    entries = _parse_entries(bundle, ctx.settings.bundle_max_entries)
    preference = return_preference(request)
    results: dict[int, dict[str, Any]] = {}
    if kind == "transaction":
        entries_by_order = sorted(entries, key=lambda e: (_ORDER[e.method], e.index))
        current: Entry | None = None
        try:
            await _plan_transaction(ctx, entries)
            for current in entries_by_order:
                outcome = await _execute(ctx, current, transaction=True)
                results[current.index] = _response_entry(outcome, ctx, preference)
        except OncoStructError as error:
            await ctx.session.rollback()
            if current is None:
                raise
            raise _in_entry(error, current) from None
        await ctx.session.commit()
    else:
        for entry in entries:
            try:
                async with ctx.session.begin_nested():
                    outcome = await _execute(ctx, entry, transaction=False)
                results[entry.index] = _response_entry(outcome, ctx, preference)
            except OncoStructError as error:
                results[entry.index] = _error_entry(error)
        await ctx.session.commit()
    response_bundle = {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [results[e.index] for e in entries],
    }
    return fhir_response(response_bundle)
