"""UIDs (PS3.5 §9.1): at most 64 characters, dot-separated numbers without leading zeros."""

from __future__ import annotations

import re

from oncostruct_shared.errors import Invalid

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` is a UID as PS3.5 §9.1 defines it."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def require_uid(value: str, what: str) -> str:
    """``value`` if it is a valid UID, else :class:`Invalid` (400) naming the rule."""
    if not is_valid_uid(value):
        raise Invalid(f"{what} {value[:80]!r} is not a valid UID (PS3.5 §9.1).")
    return value
