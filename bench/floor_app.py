"""The hand-written floor: the least a person could write to serve the benchmark notebook's function.

Starlette, run by uvicorn with uvloop, httptools and no access log; orjson for the bodies; the pickled
function (the artifact `nb2svc build` wrote, BENCH_ARTIFACT) loaded with pickle and called in the
handler, with no validation, logging, metrics, limits or thread pool. Two routes, at nb2svc's paths:

- per row, `/v1/predict/latest`: `predict(x)` once per row (a Modelbit batch answered row by row);
- vectorized, `/v1/predict_many/latest`: one `model.predict` over all the rows of the request, with the
  model the function closes over.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

with open(os.environ["BENCH_ARTIFACT"], "rb") as file:
    predict = pickle.load(file)
model = predict.__globals__["model"]


def is_batch(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], list)


def answer(data: Any) -> Response:
    return Response(orjson.dumps({"data": data}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def per_row(request: Request) -> Response:
    data = orjson.loads(await request.body())["data"]
    if is_batch(data):
        return answer([[row[0], predict(row[1])] for row in data])
    return answer(predict(data))


async def vectorized(request: Request) -> Response:
    data = orjson.loads(await request.body())["data"]
    if is_batch(data):
        results = model.predict(np.array([row[1] for row in data], dtype=float).reshape(len(data), -1)).tolist()
        return answer([[row[0], result] for row, result in zip(data, results, strict=True)])
    return answer(model.predict(np.array(data, dtype=float).reshape(1, -1)).tolist()[0])


app = Starlette(
    routes=[
        Route("/v1/predict/latest", per_row, methods=["POST"]),
        Route("/v1/predict_many/latest", vectorized, methods=["POST"]),
    ]
)
