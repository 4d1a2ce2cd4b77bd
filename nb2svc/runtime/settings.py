"""The service's settings, from the environment (so that `uvicorn app:app` in a container has them too).

`nb2svc serve` turns its flags into these variables for every worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int = 16 * MIB  # NB2SVC_MAX_BODY_BYTES -> 413
    max_batch_rows: int = 10_000  # NB2SVC_MAX_BATCH_ROWS -> 413
    timeout_seconds: float = 60.0  # NB2SVC_TIMEOUT -> 504
    max_concurrent: int = 32  # NB2SVC_MAX_CONCURRENT predictions in flight per worker -> 429
    api_keys: tuple[str, ...] = ()  # NB2SVC_API_KEY, comma-separated; none: no auth
    metrics_need_key: bool = False  # NB2SVC_METRICS_NEED_KEY=1: /metrics asks for a key too
    cors_origins: tuple[str, ...] = ()  # NB2SVC_CORS_ORIGINS, comma-separated; none: no CORS
    debug: bool = False  # NB2SVC_DEBUG=1: tracebacks in 500 answers

    @classmethod
    def from_environment(cls) -> Settings:
        env = os.environ
        return cls(
            max_body_bytes=int(env.get("NB2SVC_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_batch_rows=int(env.get("NB2SVC_MAX_BATCH_ROWS", cls.max_batch_rows)),
            timeout_seconds=float(env.get("NB2SVC_TIMEOUT", cls.timeout_seconds)),
            max_concurrent=int(env.get("NB2SVC_MAX_CONCURRENT", cls.max_concurrent)),
            api_keys=_list(env.get("NB2SVC_API_KEY", "")),
            metrics_need_key=env.get("NB2SVC_METRICS_NEED_KEY", "") in ("1", "true", "yes"),
            cors_origins=_list(env.get("NB2SVC_CORS_ORIGINS", "")),
            debug=env.get("NB2SVC_DEBUG", "") in ("1", "true", "yes"),
        )


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())
