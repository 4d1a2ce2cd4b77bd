"""The service's settings: each one defined once (flag, variable, default, parser, help).

The service reads them from the environment (so ``uvicorn app:app`` in a container has them);
``nb2svc serve`` makes its flags from the same table and hands what it was given to every
worker through the same variables, so both read ``NB2SVC_DEBUG=on`` the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


class SettingError(ValueError):
    """A setting's value cannot be read: names the variable, the value and what it takes."""

    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number of seconds above 0")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    raise ValueError(f"must be one of {', '.join(_TRUE)} or {', '.join(repr(f) for f in _FALSE)}")


def _per_endpoint(parse: Callable[[str], Any]) -> Callable[[str], tuple[tuple[str, Any], ...]]:
    """``64`` for every endpoint, or ``name=64,other=8`` for some: (endpoint name or "", value) pairs."""

    def read(text: str) -> tuple[tuple[str, Any], ...]:
        pairs = []
        for item in _names(text):
            name, _, value = item.rpartition("=")
            pairs.append((name.strip(), parse(value.strip())))
        if not pairs:
            raise ValueError("give a value, or NAME=VALUE for one endpoint")
        return tuple(pairs)

    return read


def _milliseconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number of milliseconds, 0 or more")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class Setting:
    field: str  # the attribute of Settings
    variable: str  # the environment variable
    parse: Callable[[str], Any]  # text (a variable's or a flag's) -> value; ValueError if it cannot
    help: str
    flag: str | None  # the `nb2svc serve` flag; None: environment only (secrets)
    repeatable: bool = False  # a flag given several times: its values joined with commas

    def read(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as exc:
            flag = f" (what --{self.flag} sets)" if self.flag else ""
            raise SettingError(f"{self.variable}={text!r}{flag} cannot be used: {exc}", self.variable) from None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "max_body_bytes",
        "NB2SVC_MAX_BODY_BYTES",
        _positive_int,
        "Larger request bodies are refused with 413.",
        "max-body-bytes",
    ),
    Setting(
        "max_batch_rows",
        "NB2SVC_MAX_BATCH_ROWS",
        _positive_int,
        "Larger batches are refused with 413.",
        "max-batch-rows",
    ),
    Setting(
        "timeout_seconds", "NB2SVC_TIMEOUT", _positive_float, "Seconds a prediction may take before a 504.", "timeout"
    ),
    Setting(
        "body_timeout_seconds",
        "NB2SVC_BODY_TIMEOUT",
        _positive_float,
        "Seconds a request body may take to arrive before a 408 and the connection closed.",
        "body-timeout",
    ),
    Setting(
        "max_concurrent",
        "NB2SVC_MAX_CONCURRENT",
        _positive_int,
        "Predictions in flight per worker; more are refused with 429.",
        "max-concurrent",
    ),
    Setting(
        "max_batch_size",
        "NB2SVC_MAX_BATCH_SIZE",
        _per_endpoint(_positive_int),
        "Inputs per call of a batchable function: N for all, or NAME=N (repeatable); default: the notebook's.",
        "max-batch-size",
        repeatable=True,
    ),
    Setting(
        "max_batch_wait_ms",
        "NB2SVC_MAX_BATCH_WAIT_MS",
        _per_endpoint(_milliseconds),
        "Milliseconds a batch waits for more inputs: MS for all, or NAME=MS (repeatable); default: the notebook's.",
        "max-batch-wait-ms",
        repeatable=True,
    ),
    Setting(
        "max_queue_inputs",
        "NB2SVC_MAX_QUEUE",
        _positive_int,
        "Inputs waiting per batchable endpoint; more are refused with 429.",
        "max-queue",
    ),
    Setting("api_keys", "NB2SVC_API_KEY", _names, "API keys, comma-separated (environment only); none: no auth.", None),
    Setting(
        "metrics_need_key",
        "NB2SVC_METRICS_NEED_KEY",
        _boolean,
        "/metrics asks for the API key too.",
        "metrics-need-key",
    ),
    Setting(
        "cors_origins",
        "NB2SVC_CORS_ORIGINS",
        _names,
        "An origin allowed by CORS (repeatable); none: CORS off.",
        "cors-origin",
        repeatable=True,
    ),
    Setting("debug", "NB2SVC_DEBUG", _boolean, "Put tracebacks in 500 answers.", "debug"),
)


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int = 16 * MIB
    max_batch_rows: int = 10_000
    timeout_seconds: float = 60.0
    body_timeout_seconds: float = 10.0
    max_concurrent: int = 32
    max_batch_size: tuple[tuple[str, int], ...] = ()  # (endpoint or "" for all, value); else the manifest's
    max_batch_wait_ms: tuple[tuple[str, float], ...] = ()
    max_queue_inputs: int = 10_000
    api_keys: tuple[str, ...] = ()
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    debug: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Each setting from its variable where set, else its default; SettingError for a value it cannot read."""
        environ = os.environ if environ is None else environ
        return cls(**{s.field: s.read(environ[s.variable]) for s in SETTINGS if s.variable in environ})

    def for_endpoint(self, field: str, endpoint: str, default: Any) -> Any:
        """A per-endpoint setting's value for ``endpoint``: its own, else the one for all, else ``default``."""
        values = dict(getattr(self, field))
        return values.get(endpoint, values.get("", default))

    @staticmethod
    def default(field: str) -> Any:
        return next(f.default for f in dataclasses.fields(Settings) if f.name == field)
