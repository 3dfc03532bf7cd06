"""``Annotated`` dependency aliases of the imaging routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from oncostruct_shared.auth import Principal, require_scopes
from oncostruct_shared.storage import ObjectStore

from .config import Settings


def get_settings(request: Request) -> Settings:
    """The service's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> ObjectStore:
    """The object store holding the DICOM files."""
    store: ObjectStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
ReadScope = Annotated[Principal, Depends(require_scopes("dicomweb.read"))]
WriteScope = Annotated[Principal, Depends(require_scopes("dicomweb.write"))]
DeleteScope = Annotated[Principal, Depends(require_scopes("dicomweb.delete"))]
