"""The text templates under nb2svc/templates, and the facts of a manifest they are filled with."""

from __future__ import annotations

import string
from pathlib import Path

from nb2svc.runtime.manifest import LockDescription

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def template(template_name: str) -> str:
    return (TEMPLATES / template_name).read_text(encoding="utf-8")


def fill(template_name: str, **values: str) -> str:
    return string.Template(template(template_name)).substitute(values)


def install_command(lock: LockDescription) -> str:
    """How to install the lock: with --require-hashes whenever it has hashes."""
    return "pip install --require-hashes -r requirements.txt" if lock.hashes else "pip install -r requirements.txt"
