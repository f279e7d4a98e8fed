"""What a change is inside the monitor (`Change`) and what it becomes on the wire (`Event`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Kind(StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    MOVED = "moved"


@dataclass(slots=True)
class Change:
    """One observed change, before it is measured; paths are relative to ROOT.

    Mutable on purpose: the coalescer folds later observations into it (`observed_at`).
    """

    kind: Kind
    path: str
    is_dir: bool
    observed_at: float  # wall clock (time.time()) of the latest observation folded in
    dest: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the events log."""

    id: str
    timestamp_utc: str
    event_type: Kind
    file_path: str
    dest_path: str | None
    is_directory: bool
    size: int | None
    sha256: str | None = None
    sha256_error: str | None = None

    @classmethod
    def from_change(
        cls,
        change: Change,
        *,
        size: int | None,
        sha256: str | None = None,
        sha256_error: str | None = None,
    ) -> Event:
        return cls(
            id=str(uuid.uuid4()),
            timestamp_utc=rfc3339_utc(change.observed_at),
            event_type=change.kind,
            file_path=change.path,
            dest_path=change.dest,
            is_directory=change.is_dir,
            size=size,
            sha256=sha256,
            sha256_error=sha256_error,
        )

    def to_json(self, *, checksums: bool) -> str:
        """One JSON object, no newline. `sha256` is there iff checksums are on;
        `sha256_error` only when a checksum was attempted and failed."""
        record: dict[str, object] = {
            "id": self.id,
            "timestamp_utc": self.timestamp_utc,
            "event_type": str(self.event_type),
            "file_path": self.file_path,
            "dest_path": self.dest_path,
            "is_directory": self.is_directory,
            "size": self.size,
        }
        if checksums:
            record["sha256"] = self.sha256
            if self.sha256_error is not None:
                record["sha256_error"] = self.sha256_error
        # ensure_ascii keeps undecodable file names (surrogate escapes) valid on the wire.
        return json.dumps(record, separators=(",", ":"))

    def to_text(self, *, checksums: bool) -> str:
        """One readable line, for people watching a terminal."""
        where = self.file_path
        if self.dest_path is not None:
            where += f" -> {self.dest_path}"
        if self.is_directory:
            where += "/"
        parts = [self.timestamp_utc, f"{self.event_type:<8}", where]
        if self.size is not None:
            parts.append(f"size={self.size}")
        if checksums and (self.sha256 or self.sha256_error):
            shown = self.sha256 if self.sha256 else f"({self.sha256_error})"
            parts.append(f"sha256={shown}")
        return " ".join(parts)


def rfc3339_utc(wall: float) -> str:
    """`2024-05-01T12:00:00.123456Z`."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
