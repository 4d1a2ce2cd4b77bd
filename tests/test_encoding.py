"""JSON both ways through the real app: answers byte for byte as the README documents them, and requests read
exactly as the standard library reads them, with orjson where it can and the standard library where it cannot."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy
import pandas
import pydantic
import pytest
from starlette.testclient import TestClient

from nb2svc.runtime import body, encoding
from nb2svc.runtime.app import create_app
from nb2svc.runtime.errors import BadRequest, Unencodable

from helpers import ROOT, make_service


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Reading(pydantic.BaseModel):
    x: int
    day: datetime.date


class Color(enum.Enum):
    RED = "red"


# The README's table, by its first column: what the function returns.
RESULTS: dict[str, Callable[[], Any]] = {
    "numpy.array([[1, 2], [3, 4]])": lambda: numpy.array([[1, 2], [3, 4]]),
    "numpy.float32(0.1)": lambda: numpy.float32(0.1),
    "numpy.int64(7)": lambda: numpy.int64(7),
    "pandas.Series([1.5, None])": lambda: pandas.Series([1.5, None]),
    'pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})': lambda: pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
    "[math.nan, math.inf, -math.inf]": lambda: [math.nan, math.inf, -math.inf],
    "datetime.datetime(2026, 11, 29, 6, 30, tzinfo=datetime.timezone.utc)": lambda: datetime.datetime(
        2026, 11, 29, 6, 30, tzinfo=datetime.timezone.utc
    ),
    'pandas.Timestamp("2026-11-29 06:30")': lambda: pandas.Timestamp("2026-11-29 06:30"),
    "datetime.date(2026, 11, 29)": lambda: datetime.date(2026, 11, 29),
    "datetime.time(6, 30, 15)": lambda: datetime.time(6, 30, 15),
    'b"nb2svc"': lambda: b"nb2svc",
    'decimal.Decimal("1.10")': lambda: decimal.Decimal("1.10"),
    "{3, 1, 2}": lambda: {3, 1, 2},
    "Point(x=1, y=2.5)": lambda: Point(x=1, y=2.5),
    "Reading(x=1, day=datetime.date(2026, 11, 29))": lambda: Reading(x=1, day=datetime.date(2026, 11, 29)),
    "Color.RED": lambda: Color.RED,
    "uuid.UUID(int=1)": lambda: uuid.UUID(int=1),
    '(1, "two")': lambda: (1, "two"),
    "1e-7": lambda: 1e-7,
    '"café ☕"': lambda: "café ☕",
    "2**70": lambda: 2**70,
    '{1: "a", None: "b"}': lambda: {1: "a", None: "b"},
}


def documented_answers() -> dict[str, str]:
    """The README's table of answers: what the function returns -> the answer's ``data``, as bytes to the letter."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Answers and errors", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(.+?)` \| .+? \| `(.+)` \|$", section, re.MULTILINE)
    return dict(rows)


DOCUMENTED = documented_answers()


def result(name: str) -> Any:
    return RESULTS[name]()


def kind(x):
    """What the function was given: its type and its value."""
    return [type(x).__name__, x]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    service = make_service(tmp_path_factory.mktemp("encoding"), result=result, kind=kind)
    with TestClient(create_app(service)) as client:
        yield client


@pytest.fixture
def without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a training kernel without orjson: the standard library reads and writes everything."""
    monkeypatch.setattr(encoding, "orjson", None)
    monkeypatch.setattr(body, "orjson", None)


def post(client: TestClient, name: str, content: bytes) -> Any:
    return client.post(f"/v1/{name}/latest", content=content, headers={"Content-Type": "application/json"})


def test_the_readme_documents_every_type_tested_here() -> None:
    assert set(DOCUMENTED) == set(RESULTS)


@pytest.mark.parametrize("returned", RESULTS)
def test_answers_are_the_bytes_the_readme_documents(client: TestClient, returned: str) -> None:
    answer = post(client, "result", json.dumps({"data": returned}).encode())
    assert answer.status_code == 200, answer.text
    assert answer.content == b'{"data":' + DOCUMENTED[returned].encode("utf-8") + b"}"


@pytest.mark.parametrize("returned", RESULTS)
def test_the_standard_library_alone_gives_the_same_values(
    client: TestClient, without_orjson: None, returned: str
) -> None:
    answer = post(client, "result", json.dumps({"data": returned}).encode())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": json.loads(DOCUMENTED[returned])}


@pytest.mark.parametrize("orjson", ["installed", "missing"])
@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ({(1, 2): "a tuple key"}, r"the result cannot be encoded as JSON: keys must be str, int, float, bool or None"),
        (object(), r"the result contains a builtins\.object, which cannot be encoded as JSON"),
        ([10**5000], r"the result cannot be encoded as JSON: Exceeds the limit \(4300 digits\)"),
    ],
)
def test_what_cannot_be_encoded_says_why_alike_with_or_without_orjson(
    monkeypatch: pytest.MonkeyPatch, orjson: str, returned: Any, expected: str
) -> None:
    if orjson == "missing":
        monkeypatch.setattr(encoding, "orjson", None)
    with pytest.raises(Unencodable, match=expected):
        encoding.encode_json(returned)


def test_what_orjson_will_not_write_the_standard_library_writes() -> None:
    deep: list[Any] = [1]
    for _ in range(300):  # past orjson's 254 levels
        deep = [deep]
    assert encoding.encode_json(deep) == json.dumps(deep, separators=(",", ":")).encode()
    assert encoding.encode_json(["\ud800"]) == b'["\\ud800"]'  # a lone surrogate: escaped, as ever
    assert encoding.encode_json({"big": -(2**64)}) == b'{"big":-18446744073709551616}'


@pytest.mark.parametrize(
    ("sent", "given"),
    [
        (b'{"data": 18446744073709551616}', ["int", 18446744073709551616]),  # above 2**64: orjson makes a float
        (b'{"data": -9223372036854775809}', ["int", -9223372036854775809]),
        (b'{"data": 1234567890123456789012345678901234567890}', ["int", 1234567890123456789012345678901234567890]),
        (b'{"data": 123456789012345678}', ["int", 123456789012345678]),
        (b'{"data": 1.5e300}', ["float", 1.5e300]),
        (b'{"data": 1e-400}', ["float", 0.0]),
        (b'{"data": "\\ud83d\\ude00 \\u00e9"}', ["str", "\U0001f600 é"]),
    ],
)
def test_numbers_and_strings_reach_the_function_exactly(client: TestClient, sent: bytes, given: list[Any]) -> None:
    answer = post(client, "kind", sent)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": given}
    assert answer.json()["data"][1] == given[1] and type(answer.json()["data"][1]) is type(given[1])


def test_a_lone_surrogate_is_read_and_answered_as_before(client: TestClient) -> None:
    answer = post(client, "kind", b'{"data": "\\ud800"}')  # orjson refuses it; the standard library reads it
    assert answer.content == b'{"data":["str","\\ud800"]}'


def nested(depth: int) -> bytes:
    """A body ``depth`` objects deep: ``{"data": {"k": {"k": ... 1}}}``."""
    return b'{"data": ' + b'{"k": ' * (depth - 1) + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "sent",
    [
        b'{"data": NaN}',
        b'{"data": [1, -Infinity]}',
        b'{"data": 1e400}',
        b'{"data": [1, 2,]}',
        b'\xef\xbb\xbf{"data": 1}',  # a byte order mark
        b'{"data": "\xff"}',  # not UTF-8
        b'{"data": "\x01"}',
        nested(1000),  # orjson reads up to 1024 levels; the standard library not this deep
        nested(5000),
        nested(100_000),
    ],
)
def test_a_body_orjson_refuses_is_refused_with_the_standard_librarys_message(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, sent: bytes
) -> None:
    answer = post(client, "kind", sent)
    monkeypatch.setattr(body, "orjson", None)
    before = post(client, "kind", sent)
    assert answer.status_code == before.status_code == 400
    assert answer.json()["error"]["message"] == before.json()["error"]["message"]


@pytest.mark.parametrize("depth", [31, 32, 33, 40, 200])
def test_nesting_is_read_as_the_standard_library_reads_it(client: TestClient, depth: int) -> None:
    answer = post(client, "kind", nested(depth))
    assert answer.status_code == 200
    value = answer.json()["data"][1]
    for _ in range(depth - 1):
        value = value["k"]
    assert value == 1


BODIES = [
    b'{"data": 3}',
    b' {"data" : [1, 2.5, -0, -0.0, 1E5, 1e-5, true, false, null]} ',
    b'{"data": {"a": 1, "a": 2}}',
    b'{"data": "\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000 \\u2028"}',
    b'{"data": [[1, "x"], [2, "y"]], "extra": {"nested": [{"k": [1, [2, [3]]]}]}}',
    b'{"data": ' + b"[" * 40 + b'"]]]]"' + b"]" * 40 + b"}",  # brackets inside a string do not count
    b'{"data": [0.1, 0.30000000000000004, 5e-324, 1.7976931348623157e308, 123456789012345678]}',
    b'{"data": 12345678901234567890.5}',
    b"[1, 2",
    b"",
    b"01",
]


@pytest.mark.parametrize("sent", BODIES)
def test_orjson_reads_what_the_standard_library_reads(monkeypatch: pytest.MonkeyPatch, sent: bytes) -> None:
    def outcome() -> Any:
        try:
            value = body.parse_json(sent)
        except BadRequest as exc:
            return exc.message
        return value, json.dumps(value)  # the types too: 1 and 1.0 are equal, their JSON is not

    fast = outcome()
    monkeypatch.setattr(body, "orjson", None)
    assert fast == outcome()


def test_oip_bytes_values_are_read_by_the_same_rules() -> None:
    assert body.strict_loads("18446744073709551616") == 18446744073709551616
    assert body.strict_loads('"\\ud800"') == "\ud800"
    with pytest.raises(ValueError, match="NaN is not a JSON value"):
        body.strict_loads("NaN")
