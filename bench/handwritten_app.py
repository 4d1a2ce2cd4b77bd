"""The baseline: what a person would write by hand with Starlette to serve the same pickled function."""

from __future__ import annotations

import os
import pickle

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

with open(os.environ["BENCH_ARTIFACT"], "rb") as file:
    function = pickle.load(file)


def answer(data):
    if isinstance(data, list) and data and isinstance(data[0], list):
        return [[row[0], function(*row[1:])] for row in data]
    return function(data)


async def predict(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"data": await run_in_threadpool(answer, body["data"])})


app = Starlette(routes=[Route("/v1/my_lr_deployement/latest", predict, methods=["POST"])])
