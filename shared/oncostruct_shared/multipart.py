"""Media types, Accept negotiation and multipart/related bodies (RFC 2387, RFC 2046 §5.1).

- :func:`parse_media_type` reads ``type/subtype; name=value; name="quoted"``.
- :func:`parse_accept` reads an Accept header into media ranges with q-values
  (RFC 9110 §12.5.1), the shape PS3.18 §8.7 negotiation works on.
- :func:`spool_multipart` parses a request body as it streams, writing each
  part to its own file, so a multi-GB STOW-RS body never sits in memory.
- :func:`multipart_response` streams parts out with a random boundary.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.responses import Response, StreamingResponse

from oncostruct_shared.errors import Invalid


@dataclass(frozen=True)
class MediaType:
    """A media type or range with lower-cased type and parameter names."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def param(self, name: str) -> str | None:
        """A parameter's value, or None."""
        return self.params.get(name)


def _split_unquoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return value


def parse_media_type(text: str) -> MediaType:
    """Parse one media type with parameters; quoted and unquoted values alike."""
    pieces = _split_unquoted(text, ";")
    media = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        value = _unquote(value)
        if name == "q":
            try:
                q = max(0.0, min(1.0, float(value)))
            except ValueError:
                q = 0.0
            continue
        params[name] = value
    return MediaType(media, params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """Media ranges of an Accept header, best first (RFC 9110 §12.5.1); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(part) for part in _split_unquoted(header, ",") if part.strip()]
    indexed = sorted(enumerate(ranges), key=lambda pair: (-pair[1].q, pair[0]))
    return [media for _, media in indexed if media.q > 0]


def type_matches(media_range: str, concrete: str) -> bool:
    """Whether a media range (``*/*``, ``image/*``, ``image/png``) covers ``concrete``."""
    if media_range in ("*/*", concrete):
        return True
    major, _, minor = media_range.partition("/")
    return minor == "*" and concrete.startswith(f"{major}/")


# --- request bodies -----------------------------------------------------------


@dataclass
class SpooledPart:
    """One part of a multipart body, its content in a file."""

    headers: dict[str, str]
    path: Path
    size: int = 0
    sha256: str = ""

    @property
    def content_type(self) -> MediaType:
        return parse_media_type(self.headers.get("content-type", "text/plain"))


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise Invalid("A multipart part header line has no ':' (RFC 2046 §5.1.1).")
        headers[name.strip().lower()] = value.strip()
    return headers


async def spool_multipart(
    chunks: AsyncIterable[bytes],
    boundary: str,
    new_file: Callable[[], Path],
    *,
    max_header_bytes: int = 16 * 1024,
) -> list[SpooledPart]:
    """Parse a multipart body as it streams; each part's content goes to a fresh file.

    Raises :class:`Invalid` for a body that is not well-formed multipart (no
    delimiter, a part without its header block, no close delimiter); the
    files written so far are removed then.
    """
    if not boundary or len(boundary) > 200:
        raise Invalid("The multipart boundary is missing or longer than 70 characters (RFC 2046 §5.1.1).")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    parts: list[SpooledPart] = []
    buffer = bytearray(b"\r\n")  # so that a delimiter at the very start is found like any other
    state = "preamble"
    handle = None
    digest = hashlib.sha256()
    current: SpooledPart | None = None
    done = False

    def close_part() -> None:
        nonlocal handle, current
        if handle is not None and current is not None:
            handle.close()
            current.sha256 = digest.hexdigest()
            parts.append(current)
        handle, current = None, None

    try:
        iterator = chunks.__aiter__()
        exhausted = False
        while not done:
            progressed = False
            if state == "preamble":
                index = buffer.find(delimiter)
                if index >= 0:
                    del buffer[: index + len(delimiter)]
                    state = "after-delimiter"
                    progressed = True
                elif len(buffer) > len(delimiter):
                    del buffer[: len(buffer) - len(delimiter)]
            if state == "after-delimiter" and len(buffer) >= 2:
                if buffer[:2] == b"--":
                    done = True
                    break
                line_end = buffer.find(b"\r\n")
                if line_end >= 0:
                    if buffer[:line_end].strip(b" \t"):
                        raise Invalid("Unexpected bytes after a multipart delimiter (RFC 2046 §5.1.1).")
                    del buffer[: line_end + 2]
                    state = "headers"
                    progressed = True
                elif len(buffer) > 1024:
                    raise Invalid("A multipart delimiter line is not terminated by CRLF.")
            if state == "headers":
                if buffer[:2] == b"\r\n":
                    head, rest = b"", 2
                else:
                    end = buffer.find(b"\r\n\r\n")
                    head, rest = (bytes(buffer[:end]), end + 4) if end >= 0 else (b"", -1)
                if rest < 0 and len(buffer) > max_header_bytes:
                    raise Invalid(f"A multipart part's headers are longer than {max_header_bytes} bytes.")
                if rest >= 0:
                    headers = _parse_headers(head)
                    del buffer[:rest]
                    path = new_file()
                    current = SpooledPart(headers, path)
                    handle = open(path, "wb")  # noqa: SIM115, ASYNC230 (page-cache writes; closed in close_part)
                    digest = hashlib.sha256()
                    state = "body"
                    progressed = True
            if state == "body" and handle is not None and current is not None:
                index = buffer.find(delimiter)
                if index >= 0:
                    data = bytes(buffer[:index])
                    del buffer[: index + len(delimiter)]
                    state = "after-delimiter"
                    progressed = True
                else:
                    keep = len(delimiter) - 1
                    data = bytes(buffer[: max(0, len(buffer) - keep)])
                    del buffer[: len(data)]
                if data:
                    handle.write(data)
                    digest.update(data)
                    current.size += len(data)
                if state == "after-delimiter":
                    close_part()
            if progressed:
                continue
            if exhausted:
                break
            try:
                buffer += await iterator.__anext__()
            except StopAsyncIteration:
                exhausted = True
        if not done:
            if state == "preamble":
                raise Invalid(f"The body holds no multipart delimiter for boundary {boundary[:70]!r}.")
            raise Invalid("The multipart body ends without its close delimiter (unterminated, RFC 2046 §5.1.1).")
        return parts
    except BaseException:
        if handle is not None:
            handle.close()
        for part in [*parts, *([current] if current else [])]:
            with contextlib.suppress(OSError):
                part.path.unlink()
        raise


# --- responses ----------------------------------------------------------------


#: A streamed multipart body is written in pieces of at least this size (except the last).
_COALESCE_BYTES = 256 * 1024


def new_boundary() -> str:
    """A random boundary, fresh for each response."""
    return f"oncostruct-{secrets.token_hex(16)}"


async def multipart_body(parts: AsyncIterable[tuple[str, AsyncIterable[bytes]]], boundary: str) -> AsyncIterator[bytes]:
    """The bytes of a multipart/related body from ``(content type, chunks)`` pairs.

    Delimiters, headers and small parts are gathered into writes of at least 256 KiB (a
    series of small instances is then a few writes, not one per part); large chunks go as
    they come.
    """
    separator = f"--{boundary}\r\n".encode("latin-1")
    pending: list[bytes] = []
    size = 0
    async for content_type, chunks in parts:
        pending.append(separator + f"Content-Type: {content_type}\r\n\r\n".encode("latin-1"))
        async for chunk in chunks:
            pending.append(chunk)
            size += len(chunk)
            if size >= _COALESCE_BYTES:  # small parts travel together: fewer writes to the socket
                yield b"".join(pending)
                pending, size = [], 0
        pending.append(b"\r\n")
    pending.append(f"--{boundary}--\r\n".encode("latin-1"))
    yield b"".join(pending)


def multipart_length(boundary: str, parts: Iterable[tuple[str, int]]) -> int:
    """The byte length of the body :func:`multipart_body` writes for parts of these (content type, size)."""
    separator = len(f"--{boundary}\r\n")
    total = len(f"--{boundary}--\r\n")
    for content_type, size in parts:
        total += separator + len(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")) + size + 2
    return total


def multipart_response(
    parts: AsyncIterable[tuple[str, AsyncIterable[bytes]]],
    part_type: str,
    *,
    extra_params: str = "",
    headers: dict[str, str] | None = None,
    sizes: Iterable[tuple[str, int]] | None = None,
) -> StreamingResponse:
    """A streamed ``multipart/related; type="…"`` response with a random boundary.

    With ``sizes`` (each part's content type and byte size, known in advance) the response has a
    Content-Length instead of chunked transfer coding: clients read it faster and can show progress.
    """
    boundary = new_boundary()
    media_type = f'multipart/related; type="{part_type}"{extra_params}; boundary={boundary}'
    if sizes is not None:
        headers = {**(headers or {}), "Content-Length": str(multipart_length(boundary, sizes))}
    return StreamingResponse(multipart_body(parts, boundary), media_type=media_type, headers=headers)


def multipart_content(
    parts: list[tuple[str, bytes]], part_type: str, *, headers: dict[str, str] | None = None
) -> Response:
    """A ``multipart/related; type="…"`` response built in memory, for bodies known to be small (a few
    frames): one write, no streaming task."""
    boundary = new_boundary()
    separator = f"--{boundary}\r\n".encode("latin-1")
    chunks: list[bytes] = []
    for content_type, data in parts:
        chunks += (separator, f"Content-Type: {content_type}\r\n\r\n".encode("latin-1"), data, b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    media_type = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return Response(b"".join(chunks), media_type=media_type, headers=headers)
