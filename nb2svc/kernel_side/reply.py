"""The builder's one-line calls: run a kernel-side function, hand its result back as a display output."""

from __future__ import annotations

import json
import sys

RESULT_MIME = "application/vnd.nb2svc.result+json"


def reply(module: str, function: str, arguments: str) -> None:
    """Call ``function`` of ``module`` (named relative to nb2svc) on the JSON keyword ``arguments``;
    display its JSON result in the cell that called, for the builder to read."""
    from IPython.display import display

    package = __name__.partition(".")[0]
    result = getattr(sys.modules[f"{package}.{module}"], function)(**json.loads(arguments))
    display({RESULT_MIME: result}, raw=True)
