"""The image decode is strict and answers the same with pybase64 (SIMD) as without it.

The collector decodes with pybase64 when it is importable and with the stdlib's strict
`binascii.a2b_base64` when not; a result file must become the same images and the same
MALFORMED rows on both. Each case runs on both paths: the module as imported (pybase64
present, as deployed) and the module re-imported with pybase64 made unimportable.
"""

from __future__ import annotations

import base64
import importlib
import random
import sys
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bananabatch.core.b64 as b64_module

Decode = Callable[[str | bytes | memoryview], bytes | None]

RAW = bytes(range(256)) * 40 + b"\xfb\xff\xfe"  # long enough for the SIMD loops, + and /
GOOD = base64.b64encode(RAW).decode()
URLSAFE = base64.urlsafe_b64encode(RAW).decode()


@pytest.fixture
def without_pybase64() -> Iterator[ModuleType]:
    saved = sys.modules.get("pybase64")
    sys.modules["pybase64"] = None  # type: ignore[assignment]  # import now raises ImportError
    try:
        yield importlib.reload(b64_module)
    finally:
        if saved is None:
            del sys.modules["pybase64"]
        else:
            sys.modules["pybase64"] = saved
        importlib.reload(b64_module)


@pytest.fixture(params=["simd", "stdlib"])
def decode(request: pytest.FixtureRequest) -> Decode:
    if request.param == "simd":
        assert b64_module.SIMD, "pybase64 is a runtime dependency: it must be importable here"
        return b64_module.decode
    module: ModuleType = request.getfixturevalue("without_pybase64")
    assert not module.SIMD
    fallback: Decode = module.decode
    return fallback


def test_the_deployed_path_is_simd() -> None:
    assert b64_module.SIMD


def test_the_fallback_is_taken_when_pybase64_cannot_be_imported(
    without_pybase64: ModuleType,
) -> None:
    assert without_pybase64.SIMD is False
    assert without_pybase64.decode(GOOD) == RAW


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GOOD, RAW),
        (GOOD.encode(), RAW),
        ("", b""),
        ("QQ==", b"A"),
        ("QUI=", b"AB"),
        ("QUJD", b"ABC"),
        # Non-zero bits after the last byte: both decoders let them go.
        ("QR==", b"A"),
        # The URL-safe alphabet and missing padding, as proto-JSON readers accept them.
        (URLSAFE, RAW),
        (URLSAFE.rstrip("="), RAW),
        ("QQ", b"A"),
        ("QUI", b"AB"),
        ("QQ=", b"A"),  # half the padding, made whole
        ("QUJD-+", b"ABC\xfb"),  # both alphabets in one string: the second attempt maps both
        # Padding after a whole quantum: the stdlib's strict mode lets it go, pybase64
        # refuses it; the answer must not depend on which one is installed.
        ("QUJD=", b"ABC"),
        (base64.b64encode(RAW[:-1]).decode() + "==", RAW[:-1]),
        # Whitespace only at the ends is stripped by the fallback's second attempt.
        (" QUJD", b"ABC"),
        ("QUJD\n", b"ABC"),
    ],
)
def test_valid_data_decodes_the_same_on_both_paths(
    decode: Decode, data: str | bytes, expected: bytes
) -> None:
    assert decode(data) == expected
    # As the collector hands it over: a view of the line's bytes.
    raw = data.encode() if isinstance(data, str) else data
    assert decode(memoryview(b"{" + raw + b"}")[1:-1]) == expected


@pytest.mark.parametrize(
    "data",
    [
        "a",  # a lone sextet
        "QUJDQ",  # one character past a quantum
        "=",
        "==",
        "Q===",
        "=QUJD",  # padding first
        "QQ==QUJD",  # data after padding
        "QQ=a",
        "QQ= =",
        "QU JD",  # whitespace inside
        GOOD[:100] + "\n" + GOOD[100:],  # a line break inside, as MIME would wrap it
        GOOD[:1000] + "*" + GOOD[1000:],  # a non-alphabet byte deep in the SIMD loop
        GOOD[:-8] + "!" + GOOD[-7:],  # ... and in the tail
        "QUJ\x00",
        "QUJD\x00",
        "iVBOR*w0K",
        "not base64!",
        "QUJDé",  # not ASCII
        GOOD[:500] + "é" + GOOD[500:],
        '"QUJD"',
        "QUJD\\",
    ],
)
def test_invalid_data_is_refused_on_both_paths(decode: Decode, data: str) -> None:
    assert decode(data) is None
    assert decode(data.encode("utf-8")) is None
    assert decode(memoryview(b"{" + data.encode("utf-8") + b"}")[1:-1]) is None


_ODD = '=-_ \n\t\r\x00é.*{}"\\~+/' + "".join(chr(n) for n in range(128))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """Valid base64 of any length, then a few edits: characters from anywhere in ASCII and
    beyond put in, replaced or removed, padding added."""
    text = base64.b64encode(draw(st.binary(max_size=600))).decode()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, len(text)))
        odd = draw(st.sampled_from(_ODD))
        if op == 0:
            text = text[:at] + odd + text[at:]
        elif op == 1:
            text = text[:at] + odd + text[at + 1 :]
        elif op == 2:
            text = text[:at] + text[at + 1 :]
        else:
            text += "=" * draw(st.integers(1, 3))
    return text


@settings(max_examples=1500, deadline=None)
@given(mutated())
def test_simd_answers_exactly_what_the_stdlib_answers(data: str) -> None:
    assert b64_module.SIMD
    expected = b64_module.decode_stdlib(data)
    assert b64_module.decode(data) == expected
    assert b64_module.decode(data.encode("utf-8")) == b64_module.decode_stdlib(data.encode("utf-8"))


def test_simd_answers_what_the_stdlib_answers_on_long_mutated_data() -> None:
    # Hypothesis keeps strings short; the SIMD decoder has separate loops for long input.
    rng = random.Random(18)
    for _ in range(300):
        text = base64.b64encode(rng.randbytes(rng.randint(1000, 20_000))).decode()
        at = rng.randrange(len(text))
        odd = rng.choice(_ODD)
        text = text[:at] + odd + text[at + rng.randint(0, 1) :]
        assert b64_module.decode(text) == b64_module.decode_stdlib(text), (at, odd)
