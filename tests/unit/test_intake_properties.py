from __future__ import annotations

import io
import json
import unicodedata
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bananabatch.core.catalog import ALL_MODELS, ModelSpec, Provider
from bananabatch.core.intake import (
    AcceptedLine,
    IntakeLimits,
    LineParser,
    ReferenceParser,
    RejectedLine,
    iter_raw_lines,
    key_problem,
)
from bananabatch.core.intake.rules import SIMPLE, plain_key
from bananabatch.core.limits import MAX_KEY_BYTES


def as_json(value: object) -> Any:
    """A request built by the parsers (typed as JSON), to index into in an assertion."""
    return value


LIMITS = IntakeLimits(max_line_bytes=2_000, max_prompt_chars=500)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
field_names = st.sampled_from(
    [
        *("key", "prompt", "aspect_ratio", "image_size", "model", "reference_images"),
        *("metadata", "cache", "priority", "request", "extra", "quality", "output_format"),
        "allow_third_party",
        *("display_size", "max_edge"),
    ]
)
# Objects that look like input lines, with values of any type: they reach every branch.
line_like = st.dictionaries(
    field_names,
    json_values
    | st.sampled_from(
        [
            *("1:1", "2K", "gemini-3-pro-image", "batch", "gs://inbox/references/x.png"),
            *("a/b", "__x", "gpt-image-2", "gpt-image-1", "3:2", "16:9", "1024x1536"),
            *("1536X1024", "low", "high", "ultra", "jpeg", "gif", "urgent", "normal", "bulk"),
            *("600x600", "1920 x 1080", "0x5", 700, 100000),
        ]
    )
    | st.just({"contents": [{"parts": [{"text": "hi"}]}]}),
    max_size=6,
)
# Values at the edges of the limits and the allowlist (core/limits.py, core/native.py,
# core/references.py), so that every path is held to each new rule.
edge_keys = st.sampled_from(["香", "🍌", "é", "k"]).flatmap(
    lambda ch: st.integers(min_value=50, max_value=130).map(lambda n: ch * n)
)
file_uris = st.sampled_from(
    [
        "gs://inbox/references/r.png",
        "gs://inbox/x.png",
        "gs://results/jobs/j/images/k.png",
        "https://h.example/p/q.jpg",
        "https://user:pw@h.example/q.png",
        "https://169.254.169.254/q.png",
        "https://metadata.google.internal/q.png",
        "http://h.example/q.png",
        "file:///etc/passwd",
        "gs://inbox/references/../r.png",
    ]
)
native_parts = st.sampled_from(
    [{"text": "x"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}, {"bogus": 1}, {}]
) | file_uris.map(lambda uri: {"fileData": {"fileUri": uri, "mimeType": "image/png"}})
native_requests = st.fixed_dictionaries(
    {
        "contents": st.lists(
            st.fixed_dictionaries({"parts": st.lists(native_parts, max_size=3)}), max_size=2
        )
    },
    optional={
        "systemInstruction": st.fixed_dictionaries({"parts": st.lists(native_parts, max_size=2)}),
        "generationConfig": st.sampled_from(
            [{"candidateCount": 2}, {"thinkingConfig": {}}, {"seed": 1}, {"imageConfig": {}}]
        ),
        "tools": st.just([{}]),
        "cachedContent": st.just("c"),
    },
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for n in range(depth):
        value = [value] if n % 2 else {"a": value}
    return value


limit_lines = (
    st.fixed_dictionaries(
        {"prompt": st.just("x")},
        optional={
            "key": edge_keys,
            "metadata": st.integers(min_value=1, max_value=12).map(_nested),
            "reference_images": st.lists(file_uris, max_size=2),
        },
    )
    | st.fixed_dictionaries({"request": native_requests}, optional={"key": edge_keys})
).map(lambda d: json.dumps(d, ensure_ascii=False).encode()) | st.sampled_from(
    [30, 31, 32, 33, 200, 201, 990]
).map(lambda depth: b'{"prompt": "x", "metadata": ' + json.dumps(_nested(depth)).encode() + b"}")
raw_lines = (
    st.binary(max_size=300)
    | line_like.map(lambda d: json.dumps(d).encode())
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | limit_lines
)


def is_object_name_safe(key: str) -> bool:
    return (
        0 < len(key) <= 128
        and len(key.encode()) <= MAX_KEY_BYTES
        and "/" not in key
        and "\\" not in key
        and ".." not in key
        and key not in (".", "..")
        and not key.startswith("__")
        and not any(unicodedata.category(ch) == "Cc" for ch in key)
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_lines, max_size=12))
def test_the_parser_never_raises_and_answers_once_per_line(lines: list[bytes]) -> None:
    p = LineParser(default_model="gemini-3-pro-image", limits=LIMITS)
    accepted_keys: list[str] = []
    for line_no, raw in enumerate(lines, start=1):
        result = p.parse(line_no, raw)
        if result is None:
            body = raw[3:] if line_no == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
            assert body == b"" or body.isspace()
            continue
        assert isinstance(result, AcceptedLine | RejectedLine)
        assert result.line_no == line_no
        if isinstance(result, AcceptedLine):
            accepted_keys.append(result.key)
            # Whatever was accepted can be staged the way the pipeline stages it.
            json.dumps(result.request, ensure_ascii=False, allow_nan=False).encode()
        else:
            assert result.reason.startswith(f"line {line_no}")
            assert len(result.raw) <= 2000
            json.dumps([result.reason, result.raw, result.key], ensure_ascii=False).encode()
    assert len(accepted_keys) == len(set(accepted_keys))
    assert all(is_object_name_safe(key) for key in accepted_keys)


@settings(max_examples=200, deadline=None)
@given(st.lists(raw_lines, max_size=10), st.integers(min_value=1, max_value=64))
def test_every_streamed_line_gets_exactly_one_result(lines: list[bytes], chunk: int) -> None:
    # Newlines inside generated lines split them further; count what the file really has.
    data = b"\n".join(lines)
    body = without_bom(data)
    expected = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    p = LineParser(default_model="gemini-3-pro-image", limits=LIMITS)
    numbers = []
    for line_no, raw in iter_raw_lines(
        io.BytesIO(data), max_line_bytes=LIMITS.max_line_bytes, chunk_size=chunk
    ):
        numbers.append(line_no)
        p.parse(line_no, raw)
    assert numbers == list(range(1, expected + 1))


def without_bom(data: bytes) -> bytes:
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def reference_split(data: bytes, max_line_bytes: int) -> list[tuple[int, bytes]]:
    data = without_bom(data)
    if not data:
        return []
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    out = []
    for number, piece in enumerate(pieces, start=1):
        if piece.endswith(b"\r"):
            piece = piece[:-1]
        out.append((number, piece[: max_line_bytes + 1]))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=400)
    | st.lists(st.sampled_from([b"a", b"\n", b"\r", b"\xef\xbb\xbf", b"xyz"])).map(b"".join),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=40),
)
def test_streaming_split_matches_a_plain_split(data: bytes, chunk: int, limit: int) -> None:
    got = list(iter_raw_lines(io.BytesIO(data), max_line_bytes=limit, chunk_size=chunk))
    want = reference_split(data, limit)
    # A cut line may keep a CR that the plain split would have removed past the cut.
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        if len(w) <= limit:
            assert g == w
        else:
            assert len(g) == limit + 1
            assert w.startswith(g[:limit])


safe_keys = st.text(
    alphabet=st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\\u2028\u2029"),
    min_size=1,
    max_size=128,
).filter(lambda k: key_problem(k) is None)
prompts = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=500).filter(
    lambda t: not t.isspace()
)


def _sizes(spec: ModelSpec, aspect: str | None) -> st.SearchStrategy[str]:
    """A size the model takes, in either case ("1024X1536" is "1024x1536", "2k" is "2K");
    beside its aspect ratio, a gpt-image size must be the ratio's."""
    if spec.provider is Provider.OPENAI and aspect is not None:
        sizes = st.just(spec.size_by_ratio[aspect])
    else:
        sizes = st.sampled_from(spec.image_sizes)
    return sizes.flatmap(lambda size: st.sampled_from([size, size.upper()]))


@st.composite
def simple_lines(draw: st.DrawFn) -> dict[str, Any]:
    """A valid simple line for any catalog model, Gemini's or a gpt-image one."""
    spec = draw(st.sampled_from(ALL_MODELS))
    openai = spec.provider is Provider.OPENAI
    doc: dict[str, Any] = {"prompt": draw(prompts), "model": spec.model_id}
    if draw(st.booleans()):
        doc["key"] = draw(safe_keys)
    if draw(st.booleans()):
        doc["aspect_ratio"] = draw(st.sampled_from(spec.aspect_ratios))
    if draw(st.booleans()) and spec.image_sizes:
        doc["image_size"] = draw(_sizes(spec, doc.get("aspect_ratio")))
    if openai:
        doc |= draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "quality": st.sampled_from(spec.qualities),
                    "output_format": st.sampled_from(spec.output_formats),
                },
            )
        )
    if draw(st.booleans()):
        doc["reference_images"] = draw(
            st.lists(
                st.sampled_from(
                    [
                        "gs://inbox/references/r.png",
                        "https://h.example/p/q.JPG",
                        "gs://inbox/references/x/y.webp",
                    ]
                ),
                max_size=spec.max_reference_images,
            )
        )
    if draw(st.booleans()):
        doc["metadata"] = draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
    if draw(st.booleans()):
        # The urgent lane is Gemini's synchronous API.
        levels = ["batch", "normal", "bulk"]
        doc["priority"] = draw(st.sampled_from(levels if openai else [*levels, "urgent"]))
    if draw(st.booleans()):
        doc["allow_third_party"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["cache"] = draw(st.booleans())
    return doc


@settings(max_examples=300, deadline=None)
@given(simple_lines(), st.integers(min_value=1, max_value=2_000_000), st.booleans())
def test_a_valid_simple_line_is_always_accepted_and_keeps_its_prompt(
    doc: dict[str, Any], line_no: int, ascii_only: bool
) -> None:
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    # On a day every catalog model was served (shutdowns: test_model_lifecycle_intake.py).
    result = LineParser(
        default_model="gemini-3-pro-image", limits=LIMITS, today=date(2026, 9, 1)
    ).parse(line_no, raw)
    assert isinstance(result, AcceptedLine), result
    spec = next(s for s in ALL_MODELS if s.model_id == doc["model"])
    written_size = doc.get("image_size")
    if spec.provider is Provider.OPENAI:
        body = as_json(result.request)
        assert body["prompt"] == doc["prompt"]
        assert body["model"] == doc["model"]
        # The size as written, else the ratio's, else the default: always sent.
        size = (
            written_size.lower()
            if written_size
            else spec.size_by_ratio.get(doc.get("aspect_ratio", ""), spec.default_size)
        )
        assert result.image_size == body["size"] == size
        assert result.quality == body["quality"] == doc.get("quality", spec.default_quality)
        assert body["output_format"] == doc.get("output_format", spec.default_output_format)
        assert [i["image_url"] for i in body.get("images", [])] == doc.get("reference_images", [])
    else:
        assert as_json(result.request)["contents"][0]["parts"][0] == {"text": doc["prompt"]}
        assert result.image_size == (written_size.upper() if written_size else None)
        assert result.quality is None
    assert result.key == doc.get("key", f"line-{line_no:06d}")
    assert result.model == doc["model"]
    assert result.aspect_ratio == doc.get("aspect_ratio")
    assert result.reference_images == tuple(doc.get("reference_images", ()))
    assert result.metadata == doc.get("metadata", {})
    assert len(result.prompt_preview) <= 120


@settings(max_examples=400, deadline=None)
@given(line_like)
def test_the_fast_path_and_the_exact_path_agree_on_the_shape(doc: dict[str, Any]) -> None:
    raw = json.dumps(doc).encode()
    try:
        fast: Any = SIMPLE.validate_json(raw)
    except ValidationError:
        fast = None
    try:
        exact: Any = SIMPLE.validate_python(json.loads(raw))
    except ValidationError:
        exact = None
    assert (fast is None) == (exact is None)
    if not any(v != v for v in _floats(doc)):  # NaN never equals itself
        assert fast == exact


def _floats(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return [value] if isinstance(value, float) else []


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_lines, max_size=12))
def test_the_fast_parser_answers_what_the_reference_parser_answers(lines: list[bytes]) -> None:
    """The fast parser's only contract: the reference parser's answer for every line of a
    file, from line 1 (BOM) on, with the keys of earlier lines remembered alike."""
    fast = LineParser(default_model="gemini-3-pro-image", limits=LIMITS)
    reference = ReferenceParser(default_model="gemini-3-pro-image", limits=LIMITS)
    for line_no, raw in enumerate(lines, start=1):
        assert fast.parse(line_no, raw) == reference.parse(line_no, raw)
    assert fast.models_used() == reference.models_used()


@settings(max_examples=1000, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="ascii"), max_size=140)
    | st.sampled_from(["", ".", "..", "a..b", "__x", "_x", "x.", ".x", "k" * 128, "k" * 129])
)
def test_a_key_the_plain_pattern_takes_is_one_key_problem_accepts(key: str) -> None:
    if plain_key(key) is not None:
        assert key_problem(key) is None
