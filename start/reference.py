"""The catalogue's reference for `coditect-start --help-catalogue`: docs/CATALOGUE.md itself,
shipped in the wheel as package data of `coditect_pod_docs` (pyproject.toml), so that an
installed pod can read what its messages point at without the repository or a network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REFERENCE = "CATALOGUE.md"


def catalogue_reference() -> str:
    """The reference's text; in a checkout (or an editable install), the docs/ copy."""
    found = importlib.util.find_spec("coditect_pod_docs")
    if found is not None and found.submodule_search_locations:
        for location in found.submodule_search_locations:
            if (Path(location) / REFERENCE).is_file():
                return (Path(location) / REFERENCE).read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "docs" / REFERENCE).read_text(
        encoding="utf-8")
