"""SMART App Launch scopes (v2 and v1) checked per FHIR interaction.

http://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html
v2: ``<context>/<Type|*>.<c r u d s>`` (permissions in that order, any subset);
v1: ``<context>/<Type|*>.<read|write|*>``, read = r+s, write = c+u+d.

``patient/`` scopes count only with a launch-context patient (the token's ``patient`` claim),
and then reach that patient's compartment only (:mod:`oncostruct_clinical.compartment`).
Scopes with a query restriction (``patient/Observation.rs?category=…``) grant nothing until
that restriction is applied: a scope must never grant more than it says.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

from fastapi import Request

from oncostruct_shared.auth import Principal, PrincipalDep, insufficient_scope

Interaction = Literal["c", "r", "u", "d", "s"]

_SCOPE = re.compile(r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perms>[a-z*]+)$")
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset("cruds")}
_V2 = re.compile(r"^c?r?u?d?s?$")


def _permissions(perms: str) -> frozenset[str]:
    if perms in _V1:
        return _V1[perms]
    if perms and _V2.match(perms):
        return frozenset(perms)
    return frozenset()


Grant = Literal["all", "patient"]


def smart_grant(
    scopes: Iterable[str], resource_type: str, interaction: Interaction, patient_context: bool = False
) -> Grant | None:
    """What ``scopes`` allow for ``interaction`` on ``resource_type``: everything (``system/``, ``user/``),
    the launch patient's compartment (``patient/``, with ``patient_context``), or nothing (None)."""
    best: Grant | None = None
    for scope in scopes:
        match = _SCOPE.match(scope)
        if match is None or (match["context"] == "patient" and not patient_context):
            continue
        if match["type"] not in ("*", resource_type) or interaction not in _permissions(match["perms"]):
            continue
        if match["context"] != "patient":
            return "all"
        best = "patient"
    return best


def smart_permits(scopes: Iterable[str], resource_type: str, interaction: Interaction) -> bool:
    """Whether a ``system/`` or ``user/`` scope allows ``interaction`` on ``resource_type``."""
    return smart_grant(scopes, resource_type, interaction) == "all"


def require_smart(interaction: Interaction) -> Callable[[Request, Principal], Awaitable[Principal]]:
    """A dependency checking the SMART scope for ``interaction`` on the path's resource type."""

    async def dependency(request: Request, principal: PrincipalDep) -> Principal:
        resource_type = request.path_params.get("resource_type", "*")
        if not smart_permits(principal.scopes, resource_type, interaction):
            raise insufficient_scope(f"system/{resource_type}.{interaction}")
        return principal

    return dependency
