"""BentoML serving the benchmark's model (run by bench/run.py in BentoML's own virtualenv).

`predict` takes one input per request (a number, or a list of 8 floats); `predict_many` is batchable:
BentoML's adaptive batching merges concurrent requests along the first dimension into one
`model.predict`. The model is the one the benchmark notebook trained, pickled plainly (BENCH_MODEL).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import bentoml
import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def api(**options: Any) -> Callable[[F], F]:
    """bentoml.api with the options given, typed (BentoML is not installed where mypy runs)."""
    decorator: Callable[[F], F] = bentoml.api(**options)
    return decorator


with open(os.environ["BENCH_MODEL"], "rb") as file:
    MODEL = pickle.load(file)
MAX_BATCH_SIZE = int(os.environ.get("BENCH_BENTOML_MAX_BATCH_SIZE", "128"))


@bentoml.service(workers=1)
class Bench:
    @api()
    def predict(self, x: float | list[float]) -> float:
        return float(MODEL.predict(np.array(x, dtype=float).reshape(1, -1))[0])

    @api(batchable=True, max_batch_size=MAX_BATCH_SIZE)
    def predict_many(self, xs: np.ndarray) -> np.ndarray:
        results: np.ndarray = MODEL.predict(xs.reshape(len(xs), -1))
        return results
