"""Annotations at the patient, series and ROI levels, with review, revisions and comments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from oncostruct_shared.auth import Principal
from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Forbidden, Invalid, OncoStructError

from ..config import Settings
from ..deps import IfMatchDep, ReaderDep, WriterDep, etag
from ..models import AnnotationRow, LabelSchemaRow, ProjectRow
from ..repository import (
    add_comment,
    apply_action,
    check_version,
    clinical_resources,
    finding_resources_of,
    get_annotation,
    get_project,
    get_schema,
    list_annotations,
    list_comments,
    list_revisions,
    member_projects,
    prepare_annotation,
    require_role,
    store_annotations,
    update_annotation,
    write_through_needed,
)
from ..schemas import (
    AnnotationCreate,
    AnnotationPage,
    AnnotationPublic,
    AnnotationUpdate,
    BulkCreate,
    BulkResult,
    CommentCreate,
    CommentPublic,
    RevisionPublic,
    Role,
)
from ..vocabulary import Level
from ..workflow import TRANSITIONS, Action, Status

router = APIRouter(prefix="/annotations", tags=["annotations"])
WRITERS = (Role.annotator, Role.reviewer, Role.manager)
REVIEWERS = (Role.reviewer, Role.manager)


def _author(principal: Principal, requested: str | None) -> str:
    # Only service clients (client-credentials tokens) may sign as a model, e.g. "nnr@3".
    if requested is None or requested == principal.subject:
        return principal.subject
    if principal.client_id is None:
        raise Forbidden("Only service clients may set another author (model@version).")
    return requested


def _public(row: object, response: Response | None = None) -> AnnotationPublic:
    public = AnnotationPublic.model_validate(row)
    if response is not None:
        response.headers["ETag"] = etag(public.version)
    return public


@dataclass
class Change:
    """A change to one annotation: the caller first (401/403 before anything else), then its If-Match."""

    principal: WriterDep
    version: IfMatchDep
    request: Request
    response: Response
    session: SessionDep

    async def locked(self, annotation_id: uuid.UUID) -> AnnotationRow:
        """The annotation, row-locked until the change commits."""
        return await get_annotation(self.session, annotation_id, for_update=True)

    async def allow(self, row: AnnotationRow, *roles: Role) -> None:
        """403 unless the caller has one of ``roles`` in the project; 412 unless If-Match names this version."""
        await require_role(self.session, row.project_id, self.principal.subject, *roles)
        check_version(row, self.version)


ChangeDep = Annotated[Change, Depends()]


@router.post("", status_code=201, response_model=AnnotationPublic)
async def create(
    data: AnnotationCreate, request: Request, response: Response, session: SessionDep, principal: WriterDep
) -> AnnotationPublic:
    """Create an annotation (checked against the project's schema); `client_key` makes retries harmless."""
    await require_role(session, data.project_id, principal.subject, *WRITERS)
    project = await get_project(session, data.project_id)
    row = await prepare_annotation(session, project, data, _author(principal, data.author))
    row.measurements = await request.app.state.image_check(data)
    [(annotation_id, created)] = await store_annotations(session, [row])
    if not created:
        response.status_code = 200
    settings: Settings = request.app.state.settings
    response.headers["Location"] = f"{settings.base_url}/annotations/{annotation_id}"
    return _public(await get_annotation(session, annotation_id), response)


@router.post("/bulk", response_model=BulkResult)
async def create_many(data: BulkCreate, request: Request, session: SessionDep, principal: WriterDep) -> BulkResult:
    """Create many annotations in one transaction (all or none); items whose `client_key` exists are skipped."""
    rows = []
    images: dict[tuple[str, str], Any] = {}  # each series' images, asked for once per request
    projects: dict[uuid.UUID, tuple[ProjectRow, LabelSchemaRow | None]] = {}  # checked once per request
    for index, item in enumerate(data.items):
        if item.project_id not in projects:
            await require_role(session, item.project_id, principal.subject, *WRITERS)
            found = await get_project(session, item.project_id)
            schema = await get_schema(session, found.schema_id) if found.schema_id else None
            projects[item.project_id] = (found, schema)
        project, schema = projects[item.project_id]
        try:
            row = await prepare_annotation(session, project, item, _author(principal, item.author), schema)
            row.measurements = await request.app.state.image_check(item, images)
            rows.append(row)
        except OncoStructError as exc:  # name the failing item, keep the error's own type
            expression = [f"items[{index}].{location}" for location in exc.expression]
            raise type(exc)(f"items[{index}]: {exc.detail}", expression=expression, headers=exc.headers) from exc
    results = await store_annotations(session, rows)
    created = sum(1 for _, new in results if new)
    return BulkResult(
        ids=[annotation_id for annotation_id, _ in results], created=created, existing=len(results) - created
    )


@router.get("", response_model=AnnotationPage)
async def list_(
    request: Request,
    session: SessionDep,
    principal: ReaderDep,
    project_id: Annotated[uuid.UUID | None, Query()] = None,
    patient_id: Annotated[str | None, Query()] = None,
    study_uid: Annotated[str | None, Query()] = None,
    series_uid: Annotated[str | None, Query()] = None,
    level: Annotated[Level | None, Query()] = None,
    label: Annotated[str | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    author: Annotated[str | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Created before (ISO 8601).")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(description="The `next` value of the previous page.")] = None,
) -> AnnotationPage:
    """List annotations of your projects, oldest first, filtered, one page at a time."""
    settings: Settings = request.app.state.settings
    size = min(limit or settings.page_size_default, settings.page_size_max)
    if project_id is not None:
        await require_role(session, project_id, principal.subject)
        projects = [project_id]
    else:
        projects = await member_projects(session, principal.subject)
    after = None
    if cursor:
        created, _, last_id = cursor.partition("_")
        try:
            after = (datetime.fromisoformat(created), uuid.UUID(last_id))
        except ValueError:
            raise Invalid("The cursor is not one this API returned.", expression=["cursor"]) from None
    filters = {
        "project_ids": projects,
        "patient_id": patient_id,
        "study_uid": study_uid,
        "series_uid": series_uid,
        "level": level.value if level else None,
        "label": label,
        "status": status.value if status else None,
        "author": author,
        "since": since,
        "until": until,
    }
    rows = await list_annotations(session, filters, after, size + 1)
    items = [AnnotationPublic.model_validate(row) for row in rows[:size]]
    following = f"{items[-1].created_at.isoformat()}_{items[-1].id}" if len(rows) > size else None
    return AnnotationPage(items=items, next=following)


@router.get("/{annotation_id}", response_model=AnnotationPublic)
async def read(
    annotation_id: uuid.UUID, response: Response, session: SessionDep, principal: ReaderDep
) -> AnnotationPublic:
    """Read an annotation; its `ETag` is what `If-Match` needs for changes."""
    row = await get_annotation(session, annotation_id)
    await require_role(session, row.project_id, principal.subject)
    return _public(row, response)


@router.patch("/{annotation_id}", response_model=AnnotationPublic)
async def update(annotation_id: uuid.UUID, data: AnnotationUpdate, change: ChangeDep) -> AnnotationPublic:
    """Change value, attributes, geometry or tracking id (needs `If-Match`); correcting a proposal makes it a draft."""
    row = await change.locked(annotation_id)
    await change.allow(row, *WRITERS)
    if data.geometry is not None:
        row.measurements = await change.request.app.state.image_check(
            AnnotationCreate.model_construct(
                project_id=row.project_id,
                level=Level(row.level),
                label=row.label,
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                geometry=data.geometry,
            )
        )
    updated = await update_annotation(change.session, row, data, change.principal.subject)
    return _public(updated, change.response)


@router.delete("/{annotation_id}", response_model=AnnotationPublic)
async def delete(annotation_id: uuid.UUID, change: ChangeDep) -> AnnotationPublic:
    """Delete an annotation: its status becomes `deleted`; its revisions stay (needs `If-Match`)."""
    return await _act(annotation_id, Action.delete, change)


async def _act(annotation_id: uuid.UUID, action: Action, change: Change) -> AnnotationPublic:
    request, session, principal = change.request, change.session, change.principal
    row = await change.locked(annotation_id)
    step = TRANSITIONS.get((Status(row.status), action))
    review = step is not None and step.review
    if review and "annotations.review" not in principal.scopes:
        raise Forbidden(f"{action.value} is a review decision: it needs the annotations.review scope.")
    await change.allow(row, *(REVIEWERS if review else WRITERS))
    if step is not None and write_through_needed(row, step.target):
        # Clinical first: if it does not store the resources, the annotation does not change either.
        if row.level == Level.patient.value:
            resources = await clinical_resources(session, row, step.target)
        else:
            resources = await finding_resources_of(session, row, step.target, request.app.state.clinical_reader)
        for resource in resources:
            await request.app.state.clinical.update(resource)
    return _public(await apply_action(session, row, action, principal.subject), change.response)


@router.get("/{annotation_id}/revisions", response_model=list[RevisionPublic])
async def revisions(annotation_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> list[RevisionPublic]:
    """The annotation's immutable history: who changed what, when."""
    row = await get_annotation(session, annotation_id)
    await require_role(session, row.project_id, principal.subject)
    return [RevisionPublic.model_validate(revision) for revision in await list_revisions(session, annotation_id)]


@router.post("/{annotation_id}/comments", status_code=201, response_model=CommentPublic)
async def comment(
    annotation_id: uuid.UUID, data: CommentCreate, session: SessionDep, principal: WriterDep
) -> CommentPublic:
    """Comment on an annotation."""
    row = await get_annotation(session, annotation_id)
    await require_role(session, row.project_id, principal.subject)
    return CommentPublic.model_validate(await add_comment(session, annotation_id, principal.subject, data.text))


@router.get("/{annotation_id}/comments", response_model=list[CommentPublic])
async def comments(annotation_id: uuid.UUID, session: SessionDep, principal: ReaderDep) -> list[CommentPublic]:
    """An annotation's comments, oldest first."""
    row = await get_annotation(session, annotation_id)
    await require_role(session, row.project_id, principal.subject)
    return [CommentPublic.model_validate(c) for c in await list_comments(session, annotation_id)]


# Declared last: its {action} segment must not shadow /revisions and /comments.
@router.post("/{annotation_id}/{action}", response_model=AnnotationPublic)
async def act(annotation_id: uuid.UUID, action: Action, change: ChangeDep) -> AnnotationPublic:
    """Move an annotation along its review: accept or reject a proposal; submit, withdraw; approve or reject
    a submission (reviewers, `annotations.review`); reopen a rejected one. Needs `If-Match`."""
    return await _act(annotation_id, action, change)
