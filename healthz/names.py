"""What a service name may be: one rule for the catalogue, the HTTP faces and podctl.

Its own module so that reading a catalogue (before the first fork) does not import
`healthz.model` and its snapshot classes."""

from __future__ import annotations

import re

_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def is_service_name(text: str) -> bool:
    """Whether `text` can be a service name; checked before a name is looked up or used."""
    return _SERVICE_NAME.fullmatch(text) is not None
