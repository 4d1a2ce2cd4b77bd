"""schemathesis against the service's own /openapi.json, with every check: the published contract is the behaviour."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import CheckFunction, GenerationMode, checks
from schemathesis.core.result import Err
from starlette.testclient import TestClient

import nb2svc
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

pytestmark = pytest.mark.e2e
EXAMPLES = 600  # bounded: about 10 per operation and mode
EXPLORE = os.environ.get("NB2SVC_FUZZ_EXPLORE") == "1"
checks.load_all_checks()
TIMING = {checks.max_response_time}  # speed is measured by `make bench`, never asserted in tests
# `checks=` takes check functions; a class-based check (schemathesis registers none today) is not one.
EVERY_CHECK: list[CheckFunction] = [
    check for check in checks.CHECKS.get_all() if not isinstance(check, type) and check not in TIMING
]


# Where a check cannot hold, and why. typed_api's functions are not total (max() of an empty tuple, an
# overflowing sum, an unencodable result): a valid request may get their documented 500. And an ndarray is
# "nested lists": JSON Schema cannot say they must be rectangular, so ragged lists (a 422) pass the schema.
TYPED_API_EXCEPTIONS = {
    "mean": [checks.not_a_server_error, checks.positive_data_acceptance],
    "": [checks.not_a_server_error],
}


@pytest.mark.parametrize(
    ("notebook", "exceptions"),
    [("request_modes.ipynb", {}), ("typed_api.ipynb", TYPED_API_EXCEPTIONS)],  # request_modes: every check, always
)
def test_every_answer_is_the_documented_one(tmp_path: Path, notebook: str, exceptions: dict[str, list[Any]]) -> None:
    service = tmp_path / "service"
    nb2svc.build(FIXTURES / notebook, service)
    app = create_app(service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)]
    operations = [result.ok() for result in results if not isinstance(result, Err)]
    assert len(operations) > 10
    seen: dict[int, int] = {}

    # GenerationMode is an enum.StrEnum (Python 3.11): mypy, checking as 3.10, cannot iterate the class itself.
    modes: list[GenerationMode] = list(GenerationMode)
    strategies = [operation.as_strategy(mode) for operation in operations for mode in modes]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=not EXPLORE,  # the same examples every run, unless NB2SVC_FUZZ_EXPLORE=1 asks for new ones
    )
    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call()
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        excluded = next((found for name, found in exceptions.items() if case.path.startswith(f"/v1/{name}")), [])
        case.validate_response(response, checks=EVERY_CHECK, excluded_checks=excluded)

    call()
    assert seen.get(200, 0) > 0 and seen.get(422, 0) + seen.get(400, 0) > 0, seen
    with TestClient(app) as client:  # and what a generator never sends: bodies that are not standard JSON
        for operation in operations:
            if operation.method.upper() == "POST":
                for body in NOT_STANDARD_JSON:
                    response = client.post(operation.path, content=body, headers={"Content-Type": "application/json"})
                    assert "400" in operation.definition.raw["responses"], operation.path
                    assert response.status_code == 400, (operation.path, body[:40], response.text[:200])
                    assert response.json()["error"]["type"] == "bad_request"


NOT_STANDARD_JSON = [
    b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"data": NaN}',
    b'{"data": [1, -Infinity]}',
    b'{"data": 1e400}',
    b'{"data": [[1, {"x": 1e999}]]}',
    b'{"data": "\xff"}',  # not UTF-8
]
