"""schemathesis against the service's own /openapi.json: no answer outside what the description documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import content_type_conformance, status_code_conformance

import nb2svc
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

pytestmark = pytest.mark.e2e
EXAMPLES = 300  # bounded: about 20 per operation


def test_every_answer_is_a_documented_one(tmp_path: Path) -> None:
    nb2svc.build(FIXTURES / "typed_api.ipynb", tmp_path / "typed_api")
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(tmp_path / "typed_api"))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    seen: dict[int, int] = {}

    @given(case=st.one_of([operation.as_strategy() for operation in operations]))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: schemathesis.Case) -> None:
        response = case.call()
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[status_code_conformance, content_type_conformance])
        if response.status_code >= 500:  # only the documented ones: the function raised or its result is unencodable
            assert response.json()["error"]["type"] not in ("http_error", "not_ready"), response.text

    call()
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen
