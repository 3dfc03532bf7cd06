"""The viewer's hot path: a single frame of a recently viewed series, answered below the router.

A viewer scrolling a series asks for its frames one request each, hundreds in a row. Once the
series' layout is cached (:mod:`..layouts`, loaded by the first frame request through the full
route), such a request needs a token check, a dictionary lookup and a page-cache read; the
framework around it (exception middleware, routing, request objects, the route's context)
cost more than that. :class:`FrameFastPath` sits just inside the request middleware — request
id, access log and metrics still apply, under the frames route's template — and answers
exactly that case; everything else, including every error (a missing or invalid token, a
missing scope, a frame that does not exist, an Accept it cannot satisfy as stored, a file that
is gone), goes on to the full route, which answers it the standard way.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from oncostruct_shared.multipart import multipart_content

from ..layouts import SeriesLayouts
from ..uids import is_valid_uid
from . import wado

_UID = r"([0-9.]{1,64})"


class FrameFastPath:
    """Pure ASGI middleware: ``GET …/frames/{n}`` of a cached series layout, stored frames only."""

    def __init__(self, app: ASGIApp, *, service: FastAPI) -> None:
        self.app = app
        self.service = service
        prefix = service.state.settings.api_prefix
        self.pattern = re.compile(
            re.escape(prefix) + rf"/studies/{_UID}/series/{_UID}/instances/{_UID}/frames/([1-9][0-9]{{0,8}})"
        )
        self.route: Any = None
        self.answered = Counter(
            "oncostruct_imaging_fast_frames_total",
            "Frame requests answered from the cached series layout without the router.",
            registry=service.state.metrics.registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = self.pattern.fullmatch(scope["path"])
            if match is not None and (response := await self._answer(scope, match)) is not None:
                scope["route"] = self._frames_route()  # metrics and the access log name the route
                self.answered.inc()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, match: re.Match[str]) -> Any:
        study, series, instance, number = match.groups()
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in (b"authorization", b"accept"):
                if name in found:
                    return None  # a repeated header: the full route reads it its way
                found[name] = value.decode("latin-1")
        authorization, accept = found.get(b"authorization"), found.get(b"accept")
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if not (is_valid_uid(study) and is_valid_uid(series) and is_valid_uid(instance)):
            return None
        state = self.service.state
        try:
            principal = await state.verifier.verify(token)
            if "dicomweb.read" not in principal.scopes:
                return None
            layouts: SeriesLayouts = state.layouts
            item = layouts.cached(study, series, instance)
            if item is None or item.frames is None or not 0 < int(number) <= (item.number_of_frames or 0):
                return None
            encoding = wado.choose_frame_encoding(accept, item)
            fragments = item.frames[int(number) - 1]
            if not encoding.raw or len(fragments) != 1:
                return None
            data = await state.store.read_range(item.storage_key, fragments[0][0], fragments[0][1])
        except Exception:
            return None
        return multipart_content([(encoding.content_type, data)], encoding.part_type)

    def _frames_route(self) -> Any:
        if self.route is None:
            self.route = next(
                route for route in wado.router.routes if getattr(route, "endpoint", None) is wado.retrieve_frames
            )
        return self.route
