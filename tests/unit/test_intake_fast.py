"""LineParser.parse_fast and parse_chunk against the reference parser (ReferenceParser.parse,
the specification): the same verdict and the same reason for every line, a FastLine standing
for exactly the AcceptedLine the reference gives, and per-shape templates (content hash,
manifest line) that reproduce the general encoders byte for byte."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bananabatch.core.intake import (
    AcceptedLine,
    FastLine,
    LineParser,
    ReferenceParser,
    RejectedLine,
    content_hash,
    encode_json_string,
    iter_line_chunks,
    iter_raw_lines,
    prompt_preview,
)
from bananabatch.core.intake import fast as fast_module
from bananabatch.core.manifest import ManifestEntry, encode_entry
from bananabatch.core.planning import BatchPlanner, PlanLimits
from bananabatch.core.pricing import Lane, LinePrices, PriceBook, line_prompt_tokens
from bananabatch.core.staging import manifest_lines, manifest_tail, previews_json
from tests.unit.test_intake_properties import LIMITS, line_like, prompts, raw_lines, simple_lines

MODEL = "gemini-3-pro-image"


def _both(lines: list[bytes], start: int = 2) -> list[tuple[Any, Any]]:
    fast = LineParser(default_model=MODEL, limits=LIMITS)
    exact = ReferenceParser(default_model=MODEL, limits=LIMITS)
    return [
        (fast.parse_fast(n, raw), exact.parse(n, raw)) for n, raw in enumerate(lines, start=start)
    ]


def _agree(fast: Any, exact: Any) -> None:
    if isinstance(fast, FastLine):
        assert isinstance(exact, AcceptedLine), (fast, exact)
        assert fast.accepted() == exact
        assert content_hash(fast) == content_hash(exact)
        assert fast.prompt_preview == exact.prompt_preview
    else:
        assert fast == exact


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_lines, max_size=6), st.sampled_from([1, 2]))
def test_parse_fast_and_the_reference_agree_on_any_line(lines: list[bytes], start: int) -> None:
    # From line 1 as well: a BOM is stripped there only.
    for fast, exact in _both(lines, start):
        _agree(fast, exact)


@settings(max_examples=300, deadline=None)
@given(st.lists(simple_lines(), min_size=1, max_size=5), st.booleans())
def test_parse_fast_and_the_reference_agree_on_valid_simple_lines(
    docs: list[dict[str, Any]], ascii_only: bool
) -> None:
    lines = [json.dumps(d, ensure_ascii=ascii_only).encode() for d in docs]
    for fast, exact in _both(lines):
        _agree(fast, exact)


@settings(max_examples=300, deadline=None)
@given(st.lists(line_like, max_size=5))
def test_parse_fast_and_the_reference_agree_on_line_like_objects(
    docs: list[dict[str, Any]],
) -> None:
    for fast, exact in _both([json.dumps(d).encode() for d in docs]):
        _agree(fast, exact)


def test_a_plain_simple_line_comes_back_as_a_fast_line_with_an_interned_shape() -> None:
    p = LineParser(default_model=MODEL)
    a = p.parse_fast(2, b'{"key": "a", "prompt": "x", "image_size": "2k"}')
    b = p.parse_fast(3, b'{"key": "b", "prompt": "y", "image_size": "2K"}')
    assert isinstance(a, FastLine)
    assert isinstance(b, FastLine)
    assert a.shape is b.shape
    assert (a.shape.model, a.shape.image_size, a.shape.cache) == (MODEL, "2K", True)


def test_lines_with_references_or_metadata_are_full_accepted_lines() -> None:
    p = LineParser(default_model=MODEL)
    refs = p.parse_fast(2, b'{"prompt": "x", "reference_images": ["gs://inbox/references/r.png"]}')
    meta = p.parse_fast(3, b'{"prompt": "x", "metadata": {"a": 1}}')
    assert isinstance(refs, AcceptedLine)
    assert isinstance(meta, FastLine)
    assert meta.accepted().metadata == {"a": 1}


def test_a_duplicate_key_is_rejected_the_same_way_on_both_paths() -> None:
    lines = [b'{"key": "k", "prompt": "a"}', b'{"key": "k", "prompt": "b"}']
    (first_fast, _), (second_fast, second_exact) = _both(lines)
    assert isinstance(first_fast, FastLine)
    assert isinstance(second_fast, RejectedLine)
    assert second_fast == second_exact
    assert (
        second_fast.reason
        == 'line 3, field "key": duplicate key "k": an earlier line already uses it'
    )


@settings(max_examples=300, deadline=None)
@given(prompts, st.sampled_from([None, "1:1", "16:9"]), st.sampled_from([None, "1K", "4K"]))
def test_the_shape_template_hashes_like_the_canonical_request(
    prompt: str, aspect: str | None, size: str | None
) -> None:
    p = LineParser(default_model=MODEL, limits=LIMITS)
    doc: dict[str, Any] = {"prompt": prompt, "aspect_ratio": aspect, "image_size": size}
    line = p.parse_fast(2, json.dumps(doc).encode())
    assert isinstance(line, FastLine)
    assert line.shape.content_hash(encode_json_string(prompt)) == content_hash(line.accepted())


@settings(max_examples=300, deadline=None)
@given(
    st.text(min_size=1, max_size=30),
    st.integers(min_value=1, max_value=10**7),
    st.text(max_size=130),
    st.sampled_from([None, "1:1", "21:9"]),
    st.sampled_from([None, "512", "2K"]),
    st.floats(min_value=0, max_value=10, allow_nan=False),
)
def test_the_fast_manifest_line_is_the_encoded_entry(
    key: str, line_no: int, preview: str, aspect: str | None, size: str | None, usd: float
) -> None:
    digest = "ab" * 32
    entry = ManifestEntry(key, line_no, digest, preview, aspect, size, round(usd, 6))
    (fast,) = manifest_lines(
        [encode_json_string(key)],
        [line_no],
        [digest],
        [encode_json_string(preview)],
        [manifest_tail(aspect, size, round(usd, 6))],
    )
    assert fast == encode_entry(entry)


@settings(max_examples=300, deadline=None)
@given(prompts)
def test_the_staged_preview_is_the_lines_prompt_preview(prompt: str) -> None:
    # The shortcut (a short printable prompt is its own preview) changes no preview.
    expected = encode_json_string(prompt_preview(prompt))
    assert previews_json([prompt], [encode_json_string(prompt)]) == [expected]


def test_line_prices_are_the_books_answers() -> None:
    book = PriceBook()
    prices = LinePrices(book)
    p = LineParser(default_model=MODEL)
    line = p.parse(2, b'{"prompt": "a long prompt about bananas", "image_size": "4K"}')
    assert isinstance(line, AcceptedLine)
    for lane in Lane:
        assert prices.line(line, lane) == book.estimate_line(line, lane)
        assert prices.request(line.model, line.image_size, lane, line_prompt_tokens(line)) == (
            book.estimate_line(line, lane)
        )


def test_place_is_add_with_positional_arguments() -> None:
    limits = PlanLimits(max_requests=2, max_request_bytes=100, max_output_bytes=100)
    a, b = BatchPlanner(limits), BatchPlanner(limits)
    for model, size in [("m", 10), ("m", 10), ("n", 5), ("m", 10)]:
        assert a.place(model, size, 1) == b.add(
            model=model, line_bytes=size, expected_output_bytes=1
        )
    assert a.finish() == b.finish()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64), st.integers(1, 50))
def test_line_chunks_are_the_raw_lines_in_order(data: bytes, chunk: int, limit: int) -> None:
    chunked = [
        (n, line)
        for first, lines in iter_line_chunks(
            io.BytesIO(data), max_line_bytes=limit, chunk_size=chunk
        )
        for n, line in enumerate(lines, first)
    ]
    assert chunked == list(iter_raw_lines(io.BytesIO(data), max_line_bytes=limit, chunk_size=chunk))
    # And both against a plain split (CR stripped, long lines cut to limit + 1).
    expected = []
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    pieces = body.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    for n, piece in enumerate(pieces, start=1):
        piece = piece[:-1] if piece.endswith(b"\r") else piece
        expected.append((n, piece[: limit + 1]))
    assert [(n, line) for n, line in chunked] == expected


# --- parse_chunk --------------------------------------------------------------------------

# Values at the edges of the plain-line patterns: keys the patterns admit but key_problem
# refuses, keys and prompts that need escaping, whitespace-only and overlong prompts.
_edge_keys = st.sampled_from(
    [
        *["a", "k1", "..", "a..b", "__x", "_x", ".", "x.y", "a b", "é", "a/b", "a\\b", 'q"x'],
        *["k" * 128, "k" * 129, "line-000003", ""],
    ]
) | st.text(max_size=8)
_edge_prompts = st.sampled_from(["ok", "   ", "\t", "é ✓", "a\nb", 'say "hi"', "x" * 501, ""]) | (
    st.text(max_size=20)
)
_separators = st.sampled_from([b": ", b":", b":\t", b" : "])
_commas = st.sampled_from([b", ", b",", b" ,\t"])


@st.composite
def _string_bytes(draw: st.DrawFn, value: str) -> bytes:
    """The value as a JSON string, or written raw between quotes (maybe not valid JSON), or
    as bytes that may not be UTF-8."""
    way = draw(st.sampled_from(["json", "ascii-json", "raw", "bytes"]))
    if way == "json":
        return json.dumps(value, ensure_ascii=False).encode()
    if way == "ascii-json":
        return json.dumps(value).encode()
    if way == "raw":
        return b'"' + value.encode("utf-8", "surrogatepass") + b'"'
    return b'"' + draw(st.binary(max_size=6)) + b'"'


@st.composite
def _nearly_plain_lines(draw: st.DrawFn) -> bytes:
    sep, comma = draw(_separators), draw(_commas)
    key = b'"key"' + sep + draw(_string_bytes(draw(_edge_keys)))
    prompt = b'"prompt"' + sep + draw(_string_bytes(draw(_edge_prompts)))
    fields = draw(st.sampled_from([[key, prompt], [prompt, key], [prompt], [key]]))
    pad = draw(st.sampled_from([b"", b" ", b"\t"]))
    return pad + b"{" + pad + comma.join(fields) + pad + b"}" + pad


def _chunk_and_lines(lines: list[bytes]) -> tuple[Any, list[Any]]:
    """parse_chunk's answer and parse_fast's line by line, the latter checked against the
    reference parser's."""
    by_chunk = LineParser(default_model=MODEL, limits=LIMITS)
    by_line = LineParser(default_model=MODEL, limits=LIMITS)
    singles = [by_line.parse_fast(n, r) for n, r in enumerate(lines, 2)]
    for fast, exact in zip(singles, _reference(lines), strict=True):
        _agree(fast, exact)
    return by_chunk.parse_chunk(2, lines), singles


def _reference(lines: list[bytes]) -> list[Any]:
    reference = ReferenceParser(default_model=MODEL, limits=LIMITS)
    return [reference.parse(n, r) for n, r in enumerate(lines, 2)]


def _agree_chunk(chunk: Any, singles: list[Any]) -> None:
    rows: list[Any] = []
    others: list[tuple[int, Any]] = []
    for single in singles:
        if isinstance(single, FastLine) and single.metadata is None:
            rows.append(single)
        elif single is not None:
            others.append((len(rows), single))
    assert len(chunk.line_nos) == len(rows)
    for row, single in enumerate(rows):
        got = chunk.fast_line(row)
        assert got.accepted() == single.accepted()
        assert chunk.digests[row] == content_hash(single)
        assert chunk.encoded[row] == encode_json_string(single.prompt)
    assert [at for at, _ in chunk.others] == [at for at, _ in others]
    for (_, got_other), (_, single) in zip(chunk.others, others, strict=True):
        if isinstance(single, FastLine):
            assert got_other.accepted() == single.accepted()
        else:
            assert got_other == single


PLAIN_FIRST = b'{"key": "first", "prompt": "primes the plain shape"}'


@settings(max_examples=500, deadline=None)
@given(st.lists(_nearly_plain_lines() | raw_lines, max_size=12))
def test_parse_chunk_gives_what_parse_fast_gives_line_by_line(lines: list[bytes]) -> None:
    # The first line is plain, so the plain patterns are in use for the rest.
    _agree_chunk(*_chunk_and_lines([PLAIN_FIRST, *lines]))


@settings(max_examples=200, deadline=None)
@given(st.lists(simple_lines(), min_size=1, max_size=8), st.booleans())
def test_parse_chunk_agrees_on_valid_simple_lines(
    docs: list[dict[str, Any]], ascii_only: bool
) -> None:
    lines = [json.dumps(d, ensure_ascii=ascii_only).encode() for d in docs]
    _agree_chunk(*_chunk_and_lines([PLAIN_FIRST, *lines]))


def test_parse_chunk_takes_plain_lines_without_a_json_parse_and_rejects_repeated_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[bytes] = []
    validate = fast_module._validate_simple_json

    def counting(raw: bytes) -> Any:
        parsed.append(raw)
        return validate(raw)

    monkeypatch.setattr(fast_module, "_validate_simple_json", counting)
    parser = LineParser(default_model=MODEL, limits=LIMITS)
    lines = [
        PLAIN_FIRST,
        b'{"key":"b","prompt":"two"}',
        b'{"prompt": "three"}',
        b'{"prompt": "four", "key": "b"}',
        b'{"key": "c", "prompt": "five", "image_size": "2K"}',
        b"",
    ]
    chunk = parser.parse_chunk(2, lines)
    assert chunk.keys == ["first", "b", "line-000004", "c"]
    assert chunk.line_nos == [2, 3, 4, 6]
    assert chunk.generated == [False, False, True, False]
    [(at, duplicate)] = chunk.others
    assert at == 3
    assert isinstance(duplicate, RejectedLine)
    assert duplicate.line_no == 5
    assert 'duplicate key "b"' in duplicate.reason
    # The first plain line sets the plain shape; after it only the line with an option is
    # parsed as JSON.
    assert parsed == [PLAIN_FIRST, lines[4]]


def _agree_in_chunks(lines: list[bytes], size: int) -> None:
    """The lines parsed in chunks of `size` answer as one parser taking them line by line."""
    by_chunk = LineParser(default_model=MODEL, limits=LIMITS)
    by_line = LineParser(default_model=MODEL, limits=LIMITS)
    for start in range(0, len(lines), size):
        part = lines[start : start + size]
        singles = [by_line.parse_fast(n, r) for n, r in enumerate(part, 2 + start)]
        _agree_chunk(by_chunk.parse_chunk(2 + start, part), singles)


@settings(max_examples=300, deadline=None)
@given(st.lists(_nearly_plain_lines() | raw_lines, max_size=16), st.integers(1, 6))
def test_parse_chunk_in_several_chunks_claims_keys_as_line_by_line(
    lines: list[bytes], size: int
) -> None:
    # A chunk's plain keys are claimed together: a key repeated in the chunk, or seen in an
    # earlier chunk, must still leave the first occurrence accepted and reject the others.
    _agree_in_chunks([PLAIN_FIRST, *lines], size)


def test_a_run_of_plain_lines_that_repeats_a_key_keeps_the_first_and_the_row_order() -> None:
    parser = LineParser(default_model=MODEL, limits=LIMITS)
    parser.parse_chunk(2, [PLAIN_FIRST, b'{"key": "old", "prompt": "seen before"}'])
    lines = [
        b'{"key": "a", "prompt": "one"}',
        b'{"key": "old", "prompt": "again"}',
        b'{"key": "b", "prompt": "two"}',
        b'{"key": "a", "prompt": "three"}',
        b'{"key": "c", "prompt": "four"}',
    ]
    chunk = parser.parse_chunk(4, lines)
    assert chunk.keys == ["a", "b", "c"]
    assert chunk.line_nos == [4, 6, 8]
    assert chunk.prompts == ["one", "two", "four"]
    assert [(at, other.line_no) for at, other in chunk.others] == [(1, 5), (2, 7)]
    for _, other in chunk.others:
        assert isinstance(other, RejectedLine)
        assert 'duplicate key "' in other.reason


# --- parse_chunk on chunks of plain lines only (one regex pass over the chunk) --------------

_LAYOUTS = {
    "json.dumps": '{{"key": {k}, "prompt": {p}}}',
    "compact": '{{"key":{k},"prompt":{p}}}',
    "spaced": ' {{ "key" : {k} ,  "prompt":{p} }} ',
    "tabbed": '{{"key":\t{k}, "prompt": {p}}}',
    "prompt first": '{{"prompt": {p}, "key": {k}}}',
    "prompt alone": '{{"prompt": {p}}}',
}


@st.composite
def _plain_lines(draw: st.DrawFn) -> bytes:
    """Lines in the layouts writers use, nearly all plain; now and then a key or a prompt
    at the edges of the plain patterns (the chunk path must then answer as the loop)."""
    key = draw(st.from_regex(r"[a-z][a-z0-9_.-]{0,11}", fullmatch=True) | _edge_keys)
    prompt = draw(st.from_regex(r"[a-z ,]{1,30}", fullmatch=True) | prompts | _edge_prompts)
    layout = draw(st.sampled_from(sorted(_LAYOUTS)))
    ascii_only = draw(st.booleans())
    line = _LAYOUTS[layout].format(
        k=json.dumps(key, ensure_ascii=ascii_only), p=json.dumps(prompt, ensure_ascii=ascii_only)
    )
    return line.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain_lines(), min_size=1, max_size=24), st.integers(1, 8))
def test_chunks_of_plain_lines_are_answered_as_line_by_line(lines: list[bytes], size: int) -> None:
    # After the first chunk the plain shape is known, and a chunk of plain lines only is
    # recognised whole: its rows, duplicates and rejections must be the loop's.
    _agree_in_chunks([PLAIN_FIRST, *lines], size)


def _json_lines(count: int, start: int = 0, **dumps: Any) -> list[bytes]:
    return [
        json.dumps({"key": f"k{n}", "prompt": f"a banana, study {n}"}, **dumps).encode()
        for n in range(start, start + count)
    ]


def test_a_chunk_of_plain_lines_is_taken_whole_and_any_other_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    looped: list[int] = []
    loop = LineParser._parse_lines

    def counting(self: LineParser, first: int, raws: Any) -> Any:
        looped.append(first)
        return loop(self, first, raws)

    monkeypatch.setattr(LineParser, "_parse_lines", counting)
    by_chunk = LineParser(default_model=MODEL, limits=LIMITS)
    by_line = LineParser(default_model=MODEL, limits=LIMITS)
    whole = [
        _json_lines(4),  # json.dumps' layout
        _json_lines(3, 4, separators=(",", ":")),
        [b'{"prompt": "one"}', b'{"prompt": "two", "key": "k7"}', b'{ "prompt":"three" }'],
        # A key repeated in the chunk and one seen in an earlier chunk: rejected as duplicates.
        [b'{"key": "k1", "prompt": "again"}', b'{"key": "z", "prompt": "a"}', *_json_lines(1, 20)],
        [b'{"key": "z", "prompt": "b"}', '{"key": "y.1", "prompt": "ü ✓"}'.encode()],
    ]
    by_line_only = [
        [*_json_lines(2, 30), b'{"key": "e", "prompt": "say \\"hi\\""}'],  # an escape
        [*_json_lines(2, 40), b'{"key": "t", "prompt": "a\tb"}'],  # a raw control character
        [*_json_lines(2, 50), b'{"key": "x", "prompt": "   "}'],  # a blank prompt
        [*_json_lines(2, 60), b""],  # a blank line
        [*_json_lines(2, 70), b'{"key": "y", "prompt": "ok", "image_size": "2K"}'],
        [*_json_lines(2, 80), b'{"key": "bad\xff", "prompt": "ok"}'],  # not UTF-8
        [*_json_lines(2, 90), b'{"prompt": "the key after"}'],  # key first and prompt first
        [*_json_lines(2, 95), '{"key": "é", "prompt": "ok"}'.encode()],  # not a plain key
    ]
    first = 2
    for part in [[PLAIN_FIRST], *whole, *by_line_only]:
        singles = [by_line.parse_fast(n, r) for n, r in enumerate(part, first)]
        looped.clear()
        chunk = by_chunk.parse_chunk(first, part)
        _agree_chunk(chunk, singles)
        taken_whole = part in whole
        assert looped == ([] if taken_whole else [first]), part
        first += len(part)


def test_after_chunks_with_odd_lines_the_whole_chunk_pass_backs_off_until_one_is_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A file whose every chunk holds a line that is not plain would pay for a missed pass
    # over each chunk; after a miss the next chunks go line by line, twice as many after
    # each miss in a row, and one chunk taken whole resets it.
    tried: list[int] = []
    attempt = LineParser._plain_chunk

    def counting(self: LineParser, first: int, raws: Any, shape: Any) -> Any:
        tried.append(first)
        return attempt(self, first, raws, shape)

    monkeypatch.setattr(LineParser, "_plain_chunk", counting)
    by_chunk = LineParser(default_model=MODEL, limits=LIMITS)
    by_line = LineParser(default_model=MODEL, limits=LIMITS)
    odd = b'{"key": "odd%d", "prompt": "x", "image_size": "2K"}'
    mixed = [[*_json_lines(2, 10 * n), odd % n] for n in range(3)]
    plain = [_json_lines(3, 100 + 10 * n) for n in range(4)]
    first, firsts = 2, []
    for part in [[PLAIN_FIRST], *mixed, *plain]:
        firsts.append(first)
        singles = [by_line.parse_fast(n, r) for n, r in enumerate(part, first)]
        _agree_chunk(by_chunk.parse_chunk(first, part), singles)
        first += len(part)
    # Tried: the first mixed chunk (a miss: skip one), the third (a miss: skip two), the
    # third plain one (taken whole: no skip), the fourth.
    assert tried == [firsts[1], firsts[3], firsts[6], firsts[7]]
