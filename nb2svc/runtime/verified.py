"""What the last ``nb2svc verify`` of a service directory found, kept beside its manifest (``verified.json``)."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

VERIFIED = "verified.json"  # the last verification's outcome, beside the manifest (not part of the model)


def record_verification(service_dir: Path, model_version: str, ok: bool) -> None:
    """Write ``verified.json``: whether the examples answered the same when served from the lock alone, for
    which model version, and when. A directory that cannot be written (read-only) keeps no record."""
    record = {"ok": ok, "model_version": model_version, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):
        temporary = service_dir / f".{VERIFIED}.{os.getpid()}"
        temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(temporary, service_dir / VERIFIED)


def verification_of(service_dir: Path, model_version: str) -> dict[str, Any] | None:
    """The recorded verification of this very model version (``{"ok", "at"}``), or None if there is none."""
    try:
        record = json.loads((service_dir / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("model_version") != model_version:
        return None
    return {"ok": record.get("ok") is True, "at": record.get("at")}
