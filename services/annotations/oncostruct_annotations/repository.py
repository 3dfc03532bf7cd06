"""SQL and rules of the annotation service: schemas, projects, members, annotations, revisions."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unprocessable,
    UpstreamUnavailable,
)

from .dataset.clinical_context import ClinicalReader
from .fhir_mapping import finding_resources, mcode_resource, treatment_resources, written_through
from .geometry import Mask, extent, images_of
from .models import AnnotationRow, CommentRow, LabelSchemaRow, MemberRow, ProjectRow, RevisionRow
from .schemas import AnnotationCreate, AnnotationUpdate, LabelSchemaCreate, ProjectCreate, Role
from .vocabulary import DEFAULT_SCHEMA, Level, SchemaDefinition, check_value
from .workflow import EDITABLE, Action, Status, transition

SYSTEM_AUTHOR = "oncostruct"
DEFAULT_SCHEMA_NAME = "oncology"


# --- label schemas -------------------------------------------------------------------------


async def ensure_default_schema(session: AsyncSession) -> None:
    """Install the default oncology schema (version 1) unless a schema of that name exists."""
    existing = await session.scalar(select(LabelSchemaRow.id).where(LabelSchemaRow.name == DEFAULT_SCHEMA_NAME))
    if existing is not None:
        return
    definition = SchemaDefinition.model_validate(DEFAULT_SCHEMA)
    session.add(
        LabelSchemaRow(
            id=uuid.uuid4(),
            name=DEFAULT_SCHEMA_NAME,
            version=1,
            description="Default oncology labels: patient (diagnosis, TNM, treatment, status), "
            "series (purpose, condition, diffuse findings, normality), ROI (lesion class and attributes).",
            definition=definition.model_dump(mode="json"),
            created_by=SYSTEM_AUTHOR,
        )
    )
    try:
        await session.commit()
    except IntegrityError:  # another replica installed it first
        await session.rollback()


async def create_schema(session: AsyncSession, data: LabelSchemaCreate, author: str) -> LabelSchemaRow:
    """Store a new version of schema ``data.name`` (previous version + 1)."""
    latest = await session.scalar(select(func.max(LabelSchemaRow.version)).where(LabelSchemaRow.name == data.name))
    row = LabelSchemaRow(
        id=uuid.uuid4(),
        name=data.name,
        version=(latest or 0) + 1,
        description=data.description,
        definition=data.definition.model_dump(mode="json"),
        created_by=author,
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"Schema {data.name!r} got a new version concurrently; send it again.") from None
    await session.refresh(row)
    return row


async def get_schema(session: AsyncSession, schema_id: uuid.UUID) -> LabelSchemaRow:
    """One schema version; :class:`NotFound` if absent."""
    row = await session.get(LabelSchemaRow, schema_id)
    if row is None:
        raise NotFound(f"Label schema {schema_id} does not exist.")
    return row


_DEFINITIONS: dict[uuid.UUID, SchemaDefinition] = {}


def schema_definition(row: LabelSchemaRow) -> SchemaDefinition:
    """The parsed definition of a schema version (cached: a version never changes)."""
    definition = _DEFINITIONS.get(row.id)
    if definition is None:
        definition = _DEFINITIONS[row.id] = SchemaDefinition.model_validate(row.definition)
    return definition


async def list_schemas(session: AsyncSession, name: str | None) -> list[LabelSchemaRow]:
    """Every schema version (of ``name``), by name then version."""
    query = select(LabelSchemaRow).order_by(LabelSchemaRow.name, LabelSchemaRow.version)
    if name is not None:
        query = query.where(LabelSchemaRow.name == name)
    return list((await session.scalars(query)).all())


# --- projects and members ------------------------------------------------------------------


async def create_project(session: AsyncSession, data: ProjectCreate, created_by: str) -> ProjectRow:
    """Insert a project with its creator as manager; :class:`Conflict` if the name is taken."""
    schema_id = data.schema_id
    if schema_id is None:
        schema_id = await session.scalar(
            select(LabelSchemaRow.id)
            .where(LabelSchemaRow.name == DEFAULT_SCHEMA_NAME)
            .order_by(LabelSchemaRow.version.desc())
            .limit(1)
        )
    elif await session.get(LabelSchemaRow, schema_id) is None:
        raise Unprocessable(f"Label schema {schema_id} does not exist.", expression=["schema_id"])
    row = ProjectRow(
        id=uuid.uuid4(), name=data.name, description=data.description, schema_id=schema_id, created_by=created_by
    )
    session.add(row)
    try:
        await session.flush()
        session.add(MemberRow(project_id=row.id, subject=created_by, role=Role.manager.value))
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A project named {data.name!r} already exists.") from None
    await session.refresh(row)
    return row


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> ProjectRow:
    """One project; :class:`NotFound` if absent."""
    row = await session.get(ProjectRow, project_id)
    if row is None:
        raise NotFound(f"Project {project_id} does not exist.")
    return row


async def list_projects(session: AsyncSession, subject: str, after: str | None, limit: int) -> list[ProjectRow]:
    """Projects ``subject`` is a member of, ordered by name, after the name ``after``."""
    query = (
        select(ProjectRow)
        .join(MemberRow, MemberRow.project_id == ProjectRow.id)
        .where(MemberRow.subject == subject)
        .order_by(ProjectRow.name)
        .limit(limit)
    )
    if after is not None:
        query = query.where(ProjectRow.name > after)
    return list((await session.scalars(query)).all())


async def role_of(session: AsyncSession, project_id: uuid.UUID, subject: str) -> Role | None:
    """``subject``'s role in the project, or None."""
    role = await session.scalar(
        select(MemberRow.role).where(MemberRow.project_id == project_id, MemberRow.subject == subject)
    )
    return Role(role) if role else None


async def require_role(session: AsyncSession, project_id: uuid.UUID, subject: str, *roles: Role) -> Role:
    """``subject``'s role if it is one of ``roles`` (any role when none given); 404/403 otherwise."""
    await get_project(session, project_id)
    role = await role_of(session, project_id, subject)
    if role is None:
        raise Forbidden(f"You are not a member of project {project_id}.")
    if roles and role not in roles:
        needed = " or ".join(r.value for r in roles)
        raise Forbidden(f"This needs the {needed} role in project {project_id}; you are {role.value}.")
    return role


async def put_member(session: AsyncSession, project_id: uuid.UUID, subject: str, role: Role) -> MemberRow:
    """Add ``subject`` to the project or change their role."""
    row = await session.get(MemberRow, (project_id, subject))
    if row is None:
        row = MemberRow(project_id=project_id, subject=subject, role=role.value)
        session.add(row)
    else:
        row.role = role.value
    await _keep_a_manager(session, project_id)
    await session.commit()
    return row


async def remove_member(session: AsyncSession, project_id: uuid.UUID, subject: str) -> None:
    """Remove ``subject`` from the project (never its last manager)."""
    row = await session.get(MemberRow, (project_id, subject))
    if row is None:
        raise NotFound(f"{subject} is not a member of project {project_id}.")
    await session.delete(row)
    await _keep_a_manager(session, project_id)
    await session.commit()


async def _keep_a_manager(session: AsyncSession, project_id: uuid.UUID) -> None:
    await session.flush()
    managers = await session.scalar(
        select(func.count()).where(MemberRow.project_id == project_id, MemberRow.role == Role.manager.value)
    )
    if not managers:
        await session.rollback()
        raise Conflict("A project must keep at least one manager.")


async def list_members(session: AsyncSession, project_id: uuid.UUID) -> list[MemberRow]:
    """The project's members by subject."""
    query = select(MemberRow).where(MemberRow.project_id == project_id).order_by(MemberRow.subject)
    return list((await session.scalars(query)).all())


# --- annotations ---------------------------------------------------------------------------


def _check_against_schema(definition: SchemaDefinition, data: AnnotationCreate) -> None:
    label = definition.label(data.label)
    if label is None or label.attribute:
        raise Unprocessable(f"Label {data.label!r} is not in the project's schema.", expression=["label"])
    if label.level != data.level:
        raise Unprocessable(
            f"Label {data.label!r} applies at the {label.level.value} level, not {data.level.value}.",
            expression=["level"],
        )
    check_value(label, data.value, "value")
    _check_attributes(definition, data.level, data.attributes)


def _check_attributes(definition: SchemaDefinition, level: Level, attributes: dict[str, Any]) -> None:
    if attributes and level != Level.roi:
        raise Unprocessable("Only ROI annotations have attributes.", expression=["attributes"])
    for key, value in attributes.items():
        attribute = definition.label(key)
        if attribute is None or not attribute.attribute:
            raise Unprocessable(
                f"{key!r} is not an attribute in the project's schema.", expression=[f"attributes.{key}"]
            )
        check_value(attribute, value, f"attributes.{key}")


def _check_placement(data: AnnotationCreate) -> None:
    required: dict[Level, tuple[str, ...]] = {
        Level.patient: ("patient_id",),
        Level.series: ("study_uid", "series_uid"),
        Level.roi: ("study_uid", "series_uid", "geometry"),
    }
    forbidden: dict[Level, tuple[str, ...]] = {
        Level.patient: ("study_uid", "series_uid", "geometry", "tracking_id"),
        Level.series: ("geometry", "tracking_id"),
        Level.roi: (),
    }
    for field in required[data.level]:
        if getattr(data, field) is None:
            raise Unprocessable(f"A {data.level.value} annotation needs {field}.", expression=[field])
    for field in forbidden[data.level]:
        if getattr(data, field) is not None:
            raise Unprocessable(f"A {data.level.value} annotation has no {field}.", expression=[field])
    if data.status not in (Status.draft, Status.proposed):
        raise Unprocessable("New annotations are draft or proposed.", expression=["status"])


def check_geometry_fits(geometry: Any, images: Mapping[str, tuple[int, ...]]) -> None:
    """Check that ``geometry`` lies on images of the series and inside them.

    ``images`` maps SOP Instance UID → (rows, columns, number of frames, …), as the imaging service reports.
    """
    for uid, frame in images_of(geometry):
        if uid not in images:
            raise Unprocessable(f"Instance {uid} is not in the series.", expression=["geometry"])
        rows, columns, frames = images[uid][:3]
        if frame > frames:
            raise Unprocessable(f"Instance {uid} has {frames} frame(s), not {frame}.", expression=["geometry"])
        reach = extent(geometry)
        if reach is not None and (reach[0] > columns or reach[1] > rows):
            raise Unprocessable(
                f"The geometry reaches ({reach[0]:g}, {reach[1]:g}) outside the {columns}×{rows} image of {uid}.",
                expression=["geometry"],
            )
        if isinstance(geometry, Mask) and (geometry.rows, geometry.columns) != (rows, columns):
            raise Unprocessable(
                f"The mask is {geometry.columns}×{geometry.rows}; the series grid is {columns}×{rows}.",
                expression=["geometry"],
            )


@dataclass(slots=True)
class NewAnnotation:
    """A validated annotation not yet stored: the ``annotation`` table's columns, as plain values.

    Bulk creates build thousands of these; plain objects cost a fraction of ORM instances.
    """

    id: uuid.UUID
    project_id: uuid.UUID
    schema_id: uuid.UUID
    level: str
    label: str
    value: Any
    attributes: dict[str, Any]
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    geometry: dict[str, Any] | None
    tracking_id: str | None
    scores: dict[str, Any] | None
    status: str
    author: str
    client_key: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    measurements: dict[str, float] | None = None


NEW_COLUMNS = tuple(field.name for field in dataclasses.fields(NewAnnotation))


def _snapshot(row: AnnotationRow | NewAnnotation) -> dict[str, Any]:
    return {
        "label": row.label,
        "value": row.value,
        "attributes": row.attributes,
        "geometry": row.geometry,
        "tracking_id": row.tracking_id,
        "scores": row.scores,
        "status": row.status,
    }


def _revision_values(row: AnnotationRow | NewAnnotation, author: str, action: str) -> dict[str, Any]:
    return {
        "annotation_id": row.id,
        "version": row.version,
        "author": author,
        "action": action,
        "status": row.status,
        "snapshot": _snapshot(row),
        "at": row.updated_at,
    }


def _revision(row: AnnotationRow, author: str, action: str) -> RevisionRow:
    return RevisionRow(**_revision_values(row, author, action))


async def prepare_annotation(
    session: AsyncSession,
    project: ProjectRow,
    data: AnnotationCreate,
    author: str,
    schema: LabelSchemaRow | None = None,
) -> NewAnnotation:
    """Validate ``data`` against the project's schema and build (not yet store) its row.

    ``schema`` is the project's schema row when the caller has it already (bulk requests).
    """
    if project.schema_id is None:
        raise Unprocessable(f"Project {project.id} has no label schema.")
    if schema is None or schema.id != project.schema_id:
        schema = await get_schema(session, project.schema_id)
    _check_placement(data)
    _check_against_schema(schema_definition(schema), data)
    now = datetime.now(UTC)
    return NewAnnotation(
        id=uuid.uuid4(),
        project_id=project.id,
        schema_id=schema.id,
        level=data.level.value,
        label=data.label,
        value=data.value,
        attributes=data.attributes,
        patient_id=data.patient_id,
        study_uid=data.study_uid,
        series_uid=data.series_uid,
        geometry=data.geometry.model_dump(mode="json") if data.geometry is not None else None,
        tracking_id=data.tracking_id,
        scores=data.scores,
        status=data.status.value,
        author=author,
        client_key=data.client_key,
        version=1,
        created_at=now,
        updated_at=now,
    )


async def store_annotations(session: AsyncSession, rows: list[NewAnnotation]) -> list[tuple[uuid.UUID, bool]]:
    """Insert rows (with their first revision) in one transaction.

    Rows whose ``client_key`` is already used in their project are not inserted again: the
    existing id is returned with ``False`` (idempotent retries of bulk creates).
    """
    keyed = [(row.project_id, row.client_key) for row in rows if row.client_key is not None]
    existing: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    if keyed:
        found = await session.execute(
            select(AnnotationRow.project_id, AnnotationRow.client_key, AnnotationRow.id).where(
                tuple_(AnnotationRow.project_id, AnnotationRow.client_key).in_(keyed)
            )
        )
        existing = {(project, str(key)): annotation for project, key, annotation in found.all()}
    results: list[tuple[uuid.UUID, bool]] = []
    seen: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    new_rows: list[NewAnnotation] = []
    for row in rows:
        key = (row.project_id, row.client_key) if row.client_key else None
        if key and key in existing:
            results.append((existing[key], False))
            continue
        if key and key in seen:
            results.append((seen[key], False))
            continue
        new_rows.append(row)
        if key:
            seen[key] = row.id
        results.append((row.id, True))
    if new_rows:  # one multi-row INSERT per table (not the ORM's unit of work: bulk creates are hot)
        values = [{name: getattr(row, name) for name in NEW_COLUMNS} for row in new_rows]
        await session.execute(insert(AnnotationRow), values)
        await session.execute(insert(RevisionRow), [_revision_values(row, row.author, "create") for row in new_rows])
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("Another request stored annotations with the same client keys; send it again.") from None
    return results


async def get_annotation(session: AsyncSession, annotation_id: uuid.UUID, *, for_update: bool = False) -> AnnotationRow:
    """One annotation; :class:`NotFound` if absent."""
    query = select(AnnotationRow).where(AnnotationRow.id == annotation_id)
    if for_update:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        raise NotFound(f"Annotation {annotation_id} does not exist.")
    return row


def check_version(row: AnnotationRow, expected: int) -> None:
    """:class:`PreconditionFailed` unless the annotation is still at ``expected`` (``If-Match``)."""
    if row.version != expected:
        raise PreconditionFailed(
            f"Annotation {row.id} is at version {row.version}, not {expected}: reload it and apply your change again."
        )


async def update_annotation(
    session: AsyncSession, row: AnnotationRow, data: AnnotationUpdate, author: str
) -> AnnotationRow:
    """Apply a content change (row locked by the caller, version checked); a proposal becomes a draft."""
    status = Status(row.status)
    if status not in EDITABLE:
        raise Conflict(f"A {status.value} annotation cannot be edited; withdraw or reopen it first.")
    schema = SchemaDefinition.model_validate((await get_schema(session, row.schema_id)).definition)
    label = schema.label(row.label)
    assert label is not None  # checked when the annotation was created with this schema version
    changed = data.model_fields_set
    if "value" in changed:
        check_value(label, data.value, "value")
        row.value = data.value
    if "attributes" in changed:
        _check_attributes(schema, Level(row.level), data.attributes or {})
        row.attributes = data.attributes or {}
    if "geometry" in changed:
        if row.level != Level.roi.value or data.geometry is None:
            raise Unprocessable(
                "Only ROI annotations have a geometry, and it cannot be removed.", expression=["geometry"]
            )
        row.geometry = data.geometry.model_dump(mode="json")
    if "tracking_id" in changed:
        if row.level != Level.roi.value:
            raise Unprocessable("Only ROI annotations have a tracking id.", expression=["tracking_id"])
        row.tracking_id = data.tracking_id
    action = "correct" if status == Status.proposed else "edit"
    if status == Status.proposed:
        row.status = Status.draft.value
    row.author = author
    return await _bump(session, row, author, action)


async def apply_action(session: AsyncSession, row: AnnotationRow, action: Action, author: str) -> AnnotationRow:
    """Move the annotation along the workflow (row locked by the caller, version checked)."""
    step = transition(Status(row.status), action)
    row.status = step.target.value
    return await _bump(session, row, author, action.value)


async def _bump(session: AsyncSession, row: AnnotationRow, author: str, action: str) -> AnnotationRow:
    row.version += 1
    row.updated_at = datetime.now(UTC)
    session.add(_revision(row, author, action))
    await session.commit()
    await session.refresh(row)
    return row


async def list_annotations(
    session: AsyncSession, filters: dict[str, Any], after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[AnnotationRow]:
    """Annotations matching ``filters`` (column → value; ``since``/``until`` on creation time), oldest first."""
    query = select(AnnotationRow).order_by(AnnotationRow.created_at, AnnotationRow.id).limit(limit)
    for name, value in filters.items():
        if value is None:
            continue
        if name == "since":
            query = query.where(AnnotationRow.created_at >= value)
        elif name == "until":
            query = query.where(AnnotationRow.created_at < value)
        elif name == "project_ids":
            query = query.where(AnnotationRow.project_id.in_(value))
        else:
            query = query.where(getattr(AnnotationRow, name) == value)
    if after is not None:
        query = query.where(tuple_(AnnotationRow.created_at, AnnotationRow.id) > tuple_(*after))
    return list((await session.scalars(query)).all())


async def member_projects(session: AsyncSession, subject: str) -> list[uuid.UUID]:
    """Ids of the projects ``subject`` belongs to."""
    return list((await session.scalars(select(MemberRow.project_id).where(MemberRow.subject == subject))).all())


async def list_revisions(session: AsyncSession, annotation_id: uuid.UUID) -> list[RevisionRow]:
    """Every revision of an annotation, oldest first."""
    query = select(RevisionRow).where(RevisionRow.annotation_id == annotation_id).order_by(RevisionRow.version)
    return list((await session.scalars(query)).all())


async def add_comment(session: AsyncSession, annotation_id: uuid.UUID, author: str, text: str) -> CommentRow:
    """Store a comment."""
    row = CommentRow(id=uuid.uuid4(), annotation_id=annotation_id, author=author, text=text, at=datetime.now(UTC))
    session.add(row)
    await session.commit()
    return row


async def list_comments(session: AsyncSession, annotation_id: uuid.UUID) -> list[CommentRow]:
    """An annotation's comments, oldest first."""
    query = select(CommentRow).where(CommentRow.annotation_id == annotation_id).order_by(CommentRow.at, CommentRow.id)
    return list((await session.scalars(query)).all())


# --- write-through of patient-level labels to the clinical service ---------------------------


def write_through_needed(row: AnnotationRow, target: Status) -> bool:
    """Whether moving ``row`` to ``target`` changes clinical truth (approval, or deleting an approved label).

    Patient-level labels with an mCODE resource, and every series- and ROI-level finding.
    """
    if row.level == Level.patient.value and not written_through(row.label):
        return False
    return target == Status.approved or (target == Status.deleted and row.status == Status.approved.value)


async def finding_resources_of(
    session: AsyncSession, row: AnnotationRow, target: Status, clinical: ClinicalReader
) -> list[dict[str, Any]]:
    """The FHIR resources of a series- or ROI-level finding once it is ``target``.

    Raises :class:`UpstreamUnavailable` while the imaging service has not yet linked the study to a
    FHIR ImagingStudy (it does so right after the store): the finding is written once it can point at it.
    """
    if row.study_uid is None or row.series_uid is None:  # series and ROI levels always have them
        raise Unprocessable(f"Annotation {row.id} names no series.")
    linked = await clinical.imaging_study(row.study_uid)
    if linked is None:
        raise UpstreamUnavailable(
            f"Study {row.study_uid} has no FHIR ImagingStudy in the clinical service yet; try again shortly.",
            headers={"Retry-After": "2"},
        )
    schema = SchemaDefinition.model_validate((await get_schema(session, row.schema_id)).definition)
    return finding_resources(
        schema,
        annotation_id=str(row.id),
        project_id=str(row.project_id),
        label=row.label,
        value=row.value,
        attributes=row.attributes or {},
        tracking_id=row.tracking_id,
        status=target.value,
        patient_id=linked[1],
        imaging_study_id=linked[0],
        series_uid=row.series_uid,
        recorded=row.created_at,
        author=row.author,
    )


async def clinical_resources(session: AsyncSession, row: AnnotationRow, target: Status) -> list[dict[str, Any]]:
    """The mCODE resources for ``row`` once it is ``target``; a stage group links the patient's approved T, N, M."""
    schema = schema_definition(await get_schema(session, row.schema_id))
    if row.label == "treatment":
        assert row.patient_id is not None  # patient-level annotations always have one
        return treatment_resources(
            schema,
            annotation_id=str(row.id),
            values=[str(v) for v in (row.value or [])],
            status=target.value,
            patient_id=row.patient_id,
            recorded=row.created_at,
            author=row.author,
        )
    members: dict[str, str] = {}
    if row.label == "stage_group":
        for key in ("t_category", "n_category", "m_category"):
            member = await session.scalar(
                select(AnnotationRow.id)
                .where(
                    AnnotationRow.project_id == row.project_id,
                    AnnotationRow.patient_id == row.patient_id,
                    AnnotationRow.label == key,
                    AnnotationRow.status == Status.approved.value,
                )
                .order_by(AnnotationRow.updated_at.desc())
                .limit(1)
            )
            if member is not None:
                members[key] = str(member)
    assert row.patient_id is not None  # patient-level annotations always have one
    resource = mcode_resource(
        schema,
        annotation_id=str(row.id),
        label=row.label,
        value=row.value,
        status=target.value,
        patient_id=row.patient_id,
        recorded=row.created_at,
        author=row.author,
        members=members,
    )
    return [resource]
