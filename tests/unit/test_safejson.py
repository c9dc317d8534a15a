"""safejson: JSON from others decoded with a bound on nesting, rejected cheaply when past it."""

from __future__ import annotations

import json
import pickle
import time
import tracemalloc

import pytest

from oomcheck.safejson import MAX_DEPTH, TooDeep, loads, raw_decode, too_deep


def nested(depth: int, *, kind: str = "array") -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        pytest.param("[]", False, id="empty-array"),
        pytest.param('{"a": [1, {"b": [2]}]}', False, id="shallow"),
        pytest.param(nested(MAX_DEPTH), False, id="at-the-limit"),
        pytest.param(nested(MAX_DEPTH + 1), True, id="one-past-the-limit"),
        pytest.param(nested(MAX_DEPTH + 1, kind="object"), True, id="objects-past-the-limit"),
        pytest.param('["' + "[" * 500 + '"]', False, id="brackets-inside-a-string"),
        pytest.param('["\\"' + "[" * 500 + '"]', False, id="escaped-quote-inside-a-string"),
        pytest.param('["\\\\", ' + "[" * 500, True, id="escaped-backslash-ends-the-string"),
        pytest.param("[" * 500, True, id="cut-off"),
        pytest.param('"abc" ' + "[" * 500, False, id="a-scalar-never-nests"),
        pytest.param("  \n" + "[" * 500, True, id="leading-whitespace"),
        pytest.param("[[]] " + "[" * 500, False, id="only-the-first-value-counts"),
        pytest.param("", False, id="empty"),
    ],
)
def test_too_deep(text: str, deep: bool) -> None:
    assert too_deep(text) is deep


def test_the_measured_depth_is_the_decoders() -> None:
    # Whatever the limit, a value exactly that deep decodes and one deeper is refused.
    for limit in (1, 5, MAX_DEPTH):
        assert json.loads(nested(limit)) == loads(nested(limit), max_depth=limit)
        with pytest.raises(TooDeep):
            loads(nested(limit + 1), max_depth=limit)


@pytest.mark.parametrize("kind", ["array", "object"])
def test_hostile_depth_is_refused_cheaply(kind: str) -> None:
    text = nested(100_000, kind=kind)
    # json.loads itself cannot read it: this is what used to escape the parsers.
    with pytest.raises(RecursionError):
        json.loads(text)
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(TooDeep):
            loads(text.encode())
        with pytest.raises(TooDeep):
            raw_decode(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    took = time.perf_counter() - began
    # The scan stops at the 65th bracket; what costs anything is decoding the bytes once.
    assert took < 0.5, f"{took:.3f} s"
    assert peak < 4 * len(text) + 2**20


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(pickle.dumps({"status": "STARTED"}), id="pickle"),
        pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b"{status: STARTED}", id="not-json"),
        pytest.param(b'{"a": 1', id="cut-off"),
    ],
)
def test_unreadable_values_raise_value_error(raw: bytes) -> None:
    # Any ValueError: the callers count every one of them as a skipped value.
    with pytest.raises(ValueError):
        loads(raw)


def test_values_within_bounds_decode_as_json_does() -> None:
    raw = '{"status": "STARTED", "result": {"pid": 1, "hostname": "w@h \\u00e9"}, "args": [[1]]}'
    assert loads(raw) == loads(raw.encode()) == json.loads(raw)
    assert loads(raw.encode("utf-16")) == json.loads(raw.encode("utf-16"))
    assert raw_decode('{"a": [1]} tail', 0) == ({"a": [1]}, 10)
    assert raw_decode('x: "s" [[[', 3, max_depth=1) == ("s", 6)
