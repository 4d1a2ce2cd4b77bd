"""How to lock: which resolver, against which index, for which Python; written once for the CLI and the API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

ResolverName = Literal["uv", "pip-compile"]
RESOLVER_NAMES: tuple[str, ...] = get_args(ResolverName)
DEFAULT_RESOLVER: ResolverName = "uv"


@dataclass(frozen=True)
class LockOptions:
    """How to lock: the resolver and the index to resolve against, the target Python, or no resolver at all."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    python_version: str | None = None
    resolver: ResolverName = DEFAULT_RESOLVER
    offline: bool = False  # no resolver: pins from the installed metadata, whatever ``resolver`` says
    cache_dir: Path | None = None

    def index_lines(self) -> list[str]:
        """The index options as requirements.txt writes them, one per line."""
        lines = [f"--index-url {self.index_url}"] if self.index_url else []
        return lines + [f"--extra-index-url {url}" for url in self.extra_index_urls]

    def index_arguments(self) -> list[str]:
        """The index options as a resolver's command line takes them."""
        return [argument for line in self.index_lines() for argument in line.split(" ", 1)]
