"""The OHIF viewer (the prebuilt ``@ohif/app`` from the npm registry) lists and renders a study stored
here, in headless Chromium driven by Playwright: QIDO-RS from the study list, then metadata and
cornerstone's frame requests from the viewer, across origins (CORS) with the bearer token OHIF
takes from its ``?token=`` URL parameter — and no errors in the browser console."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from oncostruct_imaging.config import Settings as ImagingSettings
from tests.imaging.conftest import ALL_SCOPES, PrivateImaging
from tests.imaging.factory import ct_dataset, new_uid
from tests.npm_packages import ensure_package
from tests.support import Issuer, LiveServer, bearer, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, and quiet on a machine with no way out: no background or component traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESCRIPTION = "OncoStruct OHIF check"


def _app_config(dicomweb: str) -> str:
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "oncostruct",
        "configuration": {
            "friendlyName": "OncoStruct imaging",
            "name": "oncostruct",
            "qidoRoot": dicomweb,
            "wadoRoot": dicomweb,
            "wadoUriRoot": dicomweb,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": True,
            "supportsWildcard": True,
            "staticWado": False,
            "omitQuotationForMultipartRequest": True,  # cornerstone's unquoted Accept parameters
            "bulkDataURI": {"enabled": True},
        },
    }
    config = {
        "routerBasename": "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "maxNumberOfWebWorkers": 2,
        "showCPUFallbackMessage": False,
        "defaultDataSourceName": "oncostruct",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config)};\n"


class _ViewerSite:
    """Serves OHIF's ``dist`` as a single-page app, with this test's ``app-config.js``."""

    def __init__(self, dist: Path, config: str) -> None:
        self.dist = dist.resolve()
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/app-config.js":
            response: Response = Response(self.config, media_type="application/javascript")
        else:
            target = (self.dist / path.lstrip("/")).resolve()
            if self.dist in target.parents and target.is_file():
                response = FileResponse(target)
            else:  # client-side routes (/viewer …) are the app's index page
                response = FileResponse(self.dist / "index.html")
        await response(scope, receive, send)


@pytest.fixture(scope="module")
def viewer(private_imaging: PrivateImaging, issuer: Issuer) -> Iterator[dict[str, str]]:
    """OHIF on one origin, an imaging service allowing it (CORS) on another, one CT study stored there."""
    dist = ensure_package("ohif") / "dist"
    viewer_port = free_port()
    origin = f"http://127.0.0.1:{viewer_port}"
    with private_imaging("test_imaging_ohif", cors_origins=[origin], link_studies=False) as dicomweb:
        token = issuer.token(*ALL_SCOPES, ttl=3600)
        client = DICOMwebClient(dicomweb, headers=bearer(token))
        study, series = new_uid(), new_uid()
        slices = [
            ct_dataset(study, series, number, size=64, patient_id="OHIF-1", patient_name="Viewer^Test", seed=number)
            for number in range(1, 6)
        ]
        for ds in slices:
            ds.StudyDescription = DESCRIPTION
        client.store_instances(slices)
        with LiveServer(_ViewerSite(dist, _app_config(dicomweb)), port=viewer_port):
            yield {"origin": origin, "token": token, "study": study, "dicomweb": dicomweb}


def test_ohif_lists_and_renders_a_stored_study(viewer: dict[str, str], tmp_path: Path) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    dicomweb_responses: list[tuple[str, int]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
                page.on(
                    "response",
                    lambda response: (
                        dicomweb_responses.append((response.url, response.status))
                        if response.url.startswith(viewer["dicomweb"])
                        else None
                    ),
                )
                # The viewer: series metadata, then cornerstone's frame requests, drawn into the viewport.
                # (OHIF takes the ?token= of a viewer URL as the bearer token of the session's requests.)
                page.goto(f"{viewer['origin']}/viewer?StudyInstanceUIDs={viewer['study']}&token={viewer['token']}")
                canvas = page.locator("canvas.cornerstone-canvas").first
                canvas.wait_for(timeout=60_000)
                page.wait_for_function(
                    "() => performance.getEntriesByType('resource').some(e => e.name.includes('/frames/'))",
                    timeout=60_000,
                )
                page.wait_for_timeout(1_500)  # the first frame decoded and drawn
                picture = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), dtype=np.float32)
                page.screenshot(path=tmp_path / "viewer.png")

                # The study list, reached inside the app (the session keeps its token): a QIDO-RS search.
                page.evaluate("() => { history.pushState({}, '', '/'); dispatchEvent(new PopStateEvent('popstate')); }")
                page.get_by_text("Viewer, Test").first.wait_for(timeout=30_000)  # the row: OHIF's name format
                row = page.get_by_text("Viewer, Test").first.locator("xpath=ancestor::tr[1]")
                assert DESCRIPTION in row.inner_text()
                page.screenshot(path=tmp_path / "study-list.png")
            except PlaywrightError as exc:  # say what the browser saw
                page.screenshot(path=tmp_path / "ohif.png")
                raise AssertionError(
                    f"{exc}\nconsole errors: {errors}\nDICOMweb responses: {dicomweb_responses}\n"
                    f"screenshot: {tmp_path / 'ohif.png'}"
                ) from exc
        finally:
            browser.close()

    frames = [(url, status) for url, status in dicomweb_responses if "/frames/" in url]
    assert frames, "the viewer asked for no frames"
    assert all(status == 200 for _, status in dicomweb_responses), dicomweb_responses
    assert any("/metadata" in url for url, _ in dicomweb_responses)
    assert any(url.split("?")[0].endswith("/dicomweb/studies") for url, _ in dicomweb_responses)  # the list
    # The stored pixels are noise through a CT window: a drawn image varies, a blank viewport does not.
    assert picture.std() > 10, f"blank viewport (pixel std {picture.std():.1f})"
    assert errors == []


def test_cors_lets_the_configured_origin_in_and_no_other(viewer: dict[str, str]) -> None:
    url = f"{viewer['dicomweb']}/studies"
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(url, headers={"Origin": viewer["origin"], **preflight})
    assert allowed.status_code == 200  # a preflight carries no token and needs none
    assert allowed.headers["access-control-allow-origin"] == viewer["origin"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(url, headers={"Origin": "http://elsewhere.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    # Errors carry the CORS headers too, so the viewer can read why (and the Warning header).
    unauthorized = httpx.get(url, headers={"Origin": viewer["origin"]})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == viewer["origin"]
    assert "warning" in unauthorized.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("origin", ["http://viewer.example/path", "viewer.example", "ftp://x"])
def test_a_cors_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        ImagingSettings(cors_origins=[origin])


def test_cors_origins_are_kept_as_browsers_send_them() -> None:
    settings = ImagingSettings(cors_origins=["HTTPS://Viewer.Example.org:443", "http://pacs:80", "http://ohif:3000"])
    assert settings.cors_origins == ["https://viewer.example.org", "http://pacs", "http://ohif:3000"]
