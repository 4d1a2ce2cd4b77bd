from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nb2svc.server_process import free_port


@pytest.fixture(scope="session", autouse=True)
def lock_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One lock cache for the session (builds in subprocesses inherit it), away from the user's own."""
    cache = tmp_path_factory.mktemp("nb2svc-cache")
    previous = os.environ.get("NB2SVC_CACHE_DIR")
    os.environ["NB2SVC_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        del os.environ["NB2SVC_CACHE_DIR"]
    else:
        os.environ["NB2SVC_CACHE_DIR"] = previous


@pytest.fixture
def unused_tcp_port() -> int:
    return free_port()
