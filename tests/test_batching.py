"""Batchable endpoints (``nb2svc.batch``): one call per batch request, concurrent requests gathered into one call,
and each input's failure its own (in process: the app on the test's own event loop, calls held on events)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pandas as pd
import pytest
from starlette.testclient import TestClient

import nb2svc
from nb2svc.runtime import executor
from nb2svc.runtime.app import create_app
from nb2svc.runtime.invoke import inputs_of
from nb2svc.runtime.load import LoadedService, load_service
from nb2svc.runtime.manifest import read_manifest
from nb2svc.runtime.observability import Metrics
from nb2svc.runtime.settings import Settings

from helpers import make_service, until

CALLS: list[list[Any]] = []  # the inputs of every call of `held`, in order
STARTED = threading.Event()  # `held` has been called
RELEASE = threading.Event()  # `held` may answer


@nb2svc.batch
def sizes(xs: list[float]) -> list[int]:
    """Answers each input with the number of inputs its call had."""
    return [len(xs)] * len(xs)


@nb2svc.batch(max_batch_size=4)
def doubled(xs: list[float]) -> list[float]:
    if any(x < 0 for x in xs):
        raise ValueError("negative input")
    return [x * 2 for x in xs]


@nb2svc.batch
def held(xs: list[int]) -> list[int]:
    CALLS.append(list(xs))
    STARTED.set()
    assert RELEASE.wait(30), "never released"
    return [x * 10 for x in xs]


@nb2svc.batch
def table(rows: pd.DataFrame) -> list[float]:
    return list((rows["a"] + rows["b"]).tolist())


def service(tmp_path: Path) -> Path:
    return make_service(tmp_path / "service", sizes=sizes, doubled=doubled, held=held, table=table)


def post(client: TestClient, name: str, data: Any) -> Any:
    return client.post(f"/v1/{name}/latest", json={"data": data})


@pytest.fixture(autouse=True)
def fresh_events() -> None:
    CALLS.clear()
    STARTED.clear()
    RELEASE.clear()


def test_the_decorator_only_marks_the_function_and_the_manifest_says_so(tmp_path: Path) -> None:
    assert doubled([1.0]) == [2.0]  # in the notebook it is the function itself
    assert doubled.__nb2svc_batch__ == {"max_batch_size": 4, "max_wait_ms": 0.0}  # type: ignore[attr-defined]
    described = {e.name: e for e in read_manifest(service(tmp_path)).endpoints}
    assert described["doubled"].batch is not None and described["doubled"].batch.max_batch_size == 4
    assert described["sizes"].batch is not None and described["sizes"].batch.max_batch_size == 128
    assert described["doubled"].parameters[0].schema == {"type": "number"}  # one input, not the list


def test_a_function_that_cannot_take_a_batch_is_refused_where_it_is_marked() -> None:
    with pytest.raises(TypeError, match="a batchable function takes one parameter"):

        @nb2svc.batch
        def two(a: float, b: float) -> float:
            return a + b

    with pytest.raises(TypeError, match="max_batch_size must be an integer of 1 or more"):
        nb2svc.batch(max_batch_size=0)(sizes)


def test_a_modelbit_batch_and_an_oip_request_are_each_one_call(tmp_path: Path) -> None:
    with TestClient(create_app(service(tmp_path))) as client:
        assert post(client, "sizes", 3.5).json() == {"data": 1}
        batch = post(client, "sizes", [[i, float(i)] for i in range(5)])
        assert batch.json() == {"data": [[i, 5] for i in range(5)]}
        tensor = {"inputs": [{"name": "xs", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]}]}
        infer = client.post("/v2/models/sizes/infer", json=tensor).json()
        assert infer["outputs"][0]["data"] == [3, 3, 3]


def test_a_batch_larger_than_the_maximum_runs_in_calls_of_the_maximum(tmp_path: Path) -> None:
    with TestClient(create_app(service(tmp_path), Settings(max_batch_size=(("sizes", 4),)))) as client:
        batch = post(client, "sizes", [[i, 1.0] for i in range(10)]).json()
        assert [answer for _, answer in batch["data"]] == [4] * 8 + [2] * 2


def test_an_input_that_fails_fails_only_itself(tmp_path: Path) -> None:
    with TestClient(create_app(service(tmp_path))) as client:
        batch = post(client, "doubled", [[1, 1.0], [2, -1.0], [3, "x"], [4, 2.0], [5, 3.0]]).json()
        assert batch["data"] == [[1, 2.0], [2, None], [3, None], [4, 4.0], [5, 6.0]]
        errors = dict((row_id, error) for row_id, error in batch["errors"])
        assert errors[2]["type"] == "ValueError" and errors[2]["message"] == "negative input"
        assert errors[3]["type"] == "validation_error" and errors[3]["parameter"] == "xs"
        one = post(client, "doubled", -1.0)
        assert one.status_code == 500 and one.json()["error"]["type"] == "ValueError"
        assert post(client, "doubled", "x").status_code == 422
        assert post(client, "doubled", 1.5).json() == {"data": 3.0}


def test_a_dataframe_endpoint_takes_each_request_s_records_as_rows_of_one_table(tmp_path: Path) -> None:
    with TestClient(create_app(service(tmp_path))) as client:
        assert post(client, "table", [{"a": 1, "b": 2}, {"a": 3, "b": 4}]).json() == {"data": [3, 7]}
        assert post(client, "table", {"a": 1, "b": 1}).json() == {"data": [2]}
        assert post(client, "table", [[1, {"a": 5, "b": 5}], [2, {"a": 1}]]).json()["data"] == [[1, 10], [2, None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the service runs on asyncio (uvicorn's loops)


@pytest.fixture
async def app_client(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, httpx2.AsyncClient]]:
    settings = getattr(request, "param", {})
    app = create_app(service(tmp_path), Settings(**settings))
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://service") as client:
        yield app, client
    RELEASE.set()  # never leave a worker thread waiting


def queued(app: Any, endpoint: str) -> float:
    registry = app.state.service.metrics.registry
    value: float = registry.get_sample_value("nb2svc_batch_queue_inputs", {"endpoint": endpoint}) or 0.0
    return value


async def predict(client: httpx2.AsyncClient, name: str, data: Any) -> Any:
    return await client.post(f"/v1/{name}/latest", content=json.dumps({"data": data}))


async def hold_first_call(app: Any, client: httpx2.AsyncClient) -> asyncio.Task[Any]:
    first = asyncio.ensure_future(predict(client, "held", 0))
    await asyncio.get_running_loop().run_in_executor(None, STARTED.wait, 30)
    return first


@pytest.mark.anyio
async def test_concurrent_requests_are_gathered_into_one_call(app_client: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = app_client
    first = await hold_first_call(app, client)
    behind = [asyncio.ensure_future(predict(client, "held", n)) for n in range(1, 6)]
    behind.append(asyncio.ensure_future(predict(client, "held", [[6, 6], [7, 7]])))  # a batch joins them too
    await until(lambda: queued(app, "held") == 7)
    RELEASE.set()
    answers = [response.json() for response in await asyncio.gather(first, *behind)]
    assert CALLS == [[0], [1, 2, 3, 4, 5, 6, 7]]  # the six requests behind the first: one call
    assert answers == [{"data": n * 10} for n in range(6)] + [{"data": [[6, 60], [7, 70]]}]
    exposition = (await client.get("/metrics")).text
    assert 'nb2svc_batch_inputs_count{endpoint="held"} 2.0' in exposition
    assert 'nb2svc_batch_inputs_sum{endpoint="held"} 8.0' in exposition
    assert 'nb2svc_queue_wait_seconds_count{endpoint="held"} 7.0' in exposition
    assert 'nb2svc_batch_call_seconds_count{endpoint="held"} 2.0' in exposition


@pytest.mark.anyio
@pytest.mark.parametrize("app_client", [{"max_queue_inputs": 3}], indirect=True)
async def test_a_full_queue_answers_429_with_retry_after(app_client: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = app_client
    first = await hold_first_call(app, client)
    behind = [asyncio.ensure_future(predict(client, "held", n)) for n in (1, 2)]
    await until(lambda: queued(app, "held") == 2)
    refused = await predict(client, "held", [[3, 3], [4, 4]])  # 2 + 2 inputs: over 3
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "held has 2 inputs waiting, and takes at most 3 (NB2SVC_MAX_QUEUE)" in refused.json()["error"]["message"]
    RELEASE.set()
    assert [r.status_code for r in await asyncio.gather(first, *behind)] == [200, 200, 200]
    assert (await predict(client, "held", [[3, 3], [4, 4]])).status_code == 200  # room again


@pytest.mark.anyio
@pytest.mark.parametrize("app_client", [{"timeout_seconds": 0.2}], indirect=True)
async def test_the_time_limit_holds_per_request(app_client: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = app_client
    first = await hold_first_call(app, client)
    waiting = await predict(client, "held", 1)  # queued behind the held call until its time runs out
    assert waiting.status_code == 504
    assert waiting.json()["error"]["message"].startswith("held: the call took longer than 0.2 s")
    assert (await first).status_code == 504
    RELEASE.set()
    assert (await predict(client, "held", 2)).json() == {"data": 20}


@pytest.mark.anyio
async def test_a_cancelled_request_is_not_computed(app_client: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = app_client
    first = await hold_first_call(app, client)
    cancelled = asyncio.ensure_future(predict(client, "held", 1))
    await until(lambda: queued(app, "held") == 1)
    cancelled.cancel()
    RELEASE.set()
    assert (await first).json() == {"data": 0}
    assert (await predict(client, "held", 2)).json() == {"data": 20}
    assert CALLS == [[0], [2]]  # the request cancelled while it waited was never computed


@pytest.mark.anyio
async def test_a_request_whose_client_has_gone_is_not_computed(
    app_client: tuple[Any, httpx2.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "CHECK_CLIENT_AFTER", 0.0)  # however short its wait, it is checked
    app, client = app_client
    first = await hold_first_call(app, client)
    body = json.dumps({"data": 1}).encode()
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:  # the body, then the client is gone
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/held/latest",
        "raw_path": b"/v1/held/latest",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    gone = asyncio.ensure_future(app(scope, receive, send))
    queued_behind = asyncio.ensure_future(predict(client, "held", 2))
    await until(lambda: queued(app, "held") == 2)
    RELEASE.set()
    assert (await first).json() == {"data": 0}
    assert (await queued_behind).json() == {"data": 20}
    await gone
    assert sent[0]["status"] == 499  # logged as the client's going, answered to nobody
    assert CALLS == [[0], [2]]  # the input of the client that left was dropped


def test_openapi_and_info_say_the_endpoint_is_batchable(tmp_path: Path) -> None:
    with TestClient(create_app(service(tmp_path))) as client:
        operation = client.get("/openapi.json").json()["paths"]["/v1/doubled/latest"]["post"]
    assert operation["x-nb2svc-batch"] == {"max_batch_size": 4, "max_wait_ms": 0.0}
    assert "batchable" in operation["description"]
    data = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"]
    assert {"type": "number"} in [form.get("allOf", [form])[0] for form in data["anyOf"]]


@pytest.mark.network  # built in a real kernel, and locked against the package index
def test_the_batching_notebook_is_built_recorded_and_served(tmp_path: Path) -> None:
    from helpers import FIXTURES

    output = tmp_path / "batching"
    nb2svc.build(FIXTURES / "batching.ipynb", output)
    described = {e.name: e for e in read_manifest(output).endpoints}
    many, rows = described["predict_many"], described["score_rows"]
    assert many.batch is not None and rows.batch is not None and rows.batch.max_wait_ms == 1.0
    # the notebook's calls, recorded as the requests a client sends: a list of three is a batch, of one a value
    assert [e.request["data"] for e in many.examples] == [[[0, 1.0], [1, 2.0], [2, 3.0]], 4.0]
    assert rows.examples[0].request == {"data": [{"x": 1.0}, {"x": 2.0}]}
    with TestClient(create_app(output)) as client:
        assert client.get("/ready").status_code == 200  # the recorded examples replayed and matched
        answer = post(client, "predict_many", [[1, 1.0], [2, "x"], [3, 3.0]]).json()
        assert answer["data"][0][1] == many.examples[0].response["data"][0][1]  # the answer for 1.0
        assert answer["errors"][0][0] == 2
        assert post(client, "score_rows", {"x": 1.0}).json() == {"data": [rows.examples[0].response["data"][0]]}


@pytest.mark.anyio
async def test_a_forgotten_endpoint_is_let_go_with_its_model(tmp_path: Path) -> None:
    """A registry server forgets a removed version's endpoint: its gatherer, which holds the model, goes too."""
    loaded = load_service(make_service(tmp_path / "service", runnable=True, doubled=doubled))  # by value: its own
    assert isinstance(loaded, LoadedService), loaded
    [endpoint] = loaded.endpoints
    running = executor.BatchingExecutor(executor.CallExecutor(1, 10.0), Settings(), Metrics())
    assert await running.run(executor.gathered_call(endpoint, inputs_of(endpoint.invoker, 2.0))) == {"data": 4.0}
    model = weakref.ref(endpoint.invoker.function)
    running.forget(endpoint)
    del loaded, endpoint
    gc.collect()
    assert model() is None
