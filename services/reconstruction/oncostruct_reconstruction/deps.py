"""``Annotated`` dependency aliases of the reconstruction service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from oncostruct_shared.auth import Principal, require_scopes

ReaderDep = Annotated[Principal, Depends(require_scopes("reconstruction.read"))]
RunnerDep = Annotated[Principal, Depends(require_scopes("reconstruction.run"))]
