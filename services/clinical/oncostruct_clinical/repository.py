"""SQL for the versioned FHIR resource store (http://hl7.org/fhir/R4/http.html#versioning)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import Gone, NotFound

from .models import ResourceHistoryRow, ResourceRow


def fhir_instant(moment: datetime) -> str:
    """Format a moment as a FHIR ``instant`` (milliseconds, explicit offset)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


async def create_resource(session: AsyncSession, resource_type: str, content: dict[str, Any]) -> ResourceRow:
    """Store ``content`` as version 1 of a new resource with a server-assigned id.

    Any ``id`` and ``meta.versionId``/``meta.lastUpdated`` the client sent are
    replaced (http://hl7.org/fhir/R4/http.html#create).
    """
    now = datetime.now(UTC)
    resource_id = str(uuid.uuid4())
    meta = dict(content.get("meta") or {})
    meta.update(versionId="1", lastUpdated=fhir_instant(now))
    stored = {**content, "resourceType": resource_type, "id": resource_id, "meta": meta}
    row = ResourceRow(
        resource_type=resource_type, id=resource_id, version_id=1, last_updated=now, deleted=False, content=stored
    )
    session.add(row)
    session.add(
        ResourceHistoryRow(
            resource_type=resource_type, id=resource_id, version_id=1, last_updated=now, deleted=False, content=stored
        )
    )
    await session.commit()
    return row


async def read_resource(session: AsyncSession, resource_type: str, resource_id: str) -> ResourceRow:
    """The current version of a resource; :class:`NotFound` or :class:`Gone` (deleted)."""
    row = await session.get(ResourceRow, (resource_type, resource_id))
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known.")
    if row.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted (version {row.version_id}).")
    return row
