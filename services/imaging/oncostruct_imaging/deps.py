"""``Annotated`` dependency aliases of the imaging routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from oncostruct_shared.auth import Principal, require_scopes
from oncostruct_shared.storage import FilesystemObjectStore

from .config import Settings


def get_settings(request: Request) -> Settings:
    """The service's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> FilesystemObjectStore:
    """The object store holding the DICOM files."""
    store: FilesystemObjectStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[FilesystemObjectStore, Depends(get_store)]
ReadScope = Annotated[Principal, Depends(require_scopes("dicomweb.read"))]
WriteScope = Annotated[Principal, Depends(require_scopes("dicomweb.write"))]
DeleteScope = Annotated[Principal, Depends(require_scopes("dicomweb.delete"))]
