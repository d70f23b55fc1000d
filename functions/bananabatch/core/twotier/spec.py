"""Two-tier jobs (issue 21): what a job asks for, how its lines become draft candidates, and
the keys that tie candidates and finals to their line. Pure.

A job is two-tier when its file starts with a header line
`{"bananabatch": {"final_model": "gemini-3-pro-image", ...}}` or when it is submitted with
`--final-model` (upload metadata `bananabatch-final-model`, which wins over the header).
Each line may say `candidates` and `keep`; the header gives their defaults. Stage one
generates `candidates` drafts per line on `draft_model`; after the cull, `keep` of them per
line (the best-scoring survivors, or the ones a person selected) are finished on
`final_model` with the candidate as a reference image and the line's own prompt.

Keys: candidate n of line K is `K~cN`; a line's first final is `K` itself (so the image a
user keeps is `images/K.png`), a later attempt or a second kept image `K~fN`. `~` is
therefore refused in the keys of a two-tier file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from bananabatch.core.catalog import Provider, model_spec, provider_of
from bananabatch.core.twotier.cull import CullThresholds

HEADER_FIELD: Final = "bananabatch"
# Upload metadata (JobRecord.options) a CLI option writes; they win over the header.
META_FINAL_MODEL: Final = "bananabatch-final-model"
META_DRAFT_MODEL: Final = "bananabatch-draft-model"
META_CANDIDATES: Final = "bananabatch-candidates"
META_KEEP: Final = "bananabatch-keep"
META_SELECTION: Final = "bananabatch-selection"
# Where the resolved spec is kept on the job (JobRecord.options), as JSON.
SPEC_OPTION: Final = "twotier"

DEFAULT_DRAFT_MODEL: Final = "gemini-3.1-flash-lite-image"
DEFAULT_CANDIDATES: Final = 4
DEFAULT_KEEP: Final = 1
MAX_CANDIDATES: Final = 16
# Lines of a two-tier file: its rounds read every item of the job and its lines' requests
# into memory, so the file is held to a size where that stays small (160k items at most).
# Hero images come in hundreds or thousands; a larger catalog is split into files.
MAX_LINES: Final = 10_000
# Every loop stops at this many times its wanted count of attempts (issue 21).
ATTEMPT_FACTOR: Final = 3

Selection = Literal["auto", "manual"]
SELECTIONS: Final = ("auto", "manual")
_HEADER_NAMES: Final = (
    "draft_model",
    "final_model",
    "candidates",
    "keep",
    "selection",
    "cull",
    "template",
)
_CANDIDATE: Final = re.compile(r"~c([1-9][0-9]*)\Z")
_FINAL: Final = re.compile(r"~f([1-9][0-9]*)\Z")


class SpecError(ValueError):
    """A two-tier header or option that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class TwoTierSpec:
    final_model: str
    draft_model: str = DEFAULT_DRAFT_MODEL
    candidates: int = DEFAULT_CANDIDATES
    keep: int = DEFAULT_KEEP
    selection: Selection = "auto"
    cull: CullThresholds = field(default_factory=CullThresholds)
    # The prompt template the file's lines come from, if any (measured rates are kept per
    # model and per template).
    template: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "final_model": self.final_model,
                "draft_model": self.draft_model,
                "candidates": self.candidates,
                "keep": self.keep,
                "selection": self.selection,
                "cull": self.cull.to_doc(),
                "template": self.template,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TwoTierSpec:
        return spec_from_mapping(json.loads(text), where="job option")


def _count(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f'"{name}": expected an integer from {low} to {high}; found {value!r}')
    return value


def _model(name: str, value: object) -> str:
    if not isinstance(value, str) or model_spec(value) is None:
        raise SpecError(f'"{name}": expected an image model of the catalog; found {value!r}')
    if provider_of(value) is not Provider.GEMINI:
        raise SpecError(f'"{name}": two-tier jobs run on Gemini models; found {value!r}')
    return value


def spec_from_mapping(given: Mapping[str, Any], *, where: str) -> TwoTierSpec:
    """The spec a header (or stored option) writes; raises SpecError naming where and the
    field."""
    try:
        return _spec(given)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _spec(given: Mapping[str, Any]) -> TwoTierSpec:
    unknown = sorted(set(given) - set(_HEADER_NAMES))
    if unknown:
        raise SpecError(f'unknown field "{unknown[0]}"; expected one of {", ".join(_HEADER_NAMES)}')
    if "final_model" not in given:
        raise SpecError('"final_model" is required')
    final = _model("final_model", given["final_model"])
    draft = _model("draft_model", given.get("draft_model", DEFAULT_DRAFT_MODEL))
    candidates = _count(
        "candidates", given.get("candidates", DEFAULT_CANDIDATES), 1, MAX_CANDIDATES
    )
    keep = _count("keep", given.get("keep", DEFAULT_KEEP), 1, MAX_CANDIDATES)
    selection = given.get("selection", "auto")
    if selection not in SELECTIONS:
        raise SpecError(f'"selection": expected one of auto, manual; found {selection!r}')
    template = given.get("template")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise SpecError(f'"template": expected a non-empty string; found {template!r}')
    try:
        cull = CullThresholds.from_mapping(given.get("cull"))
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from None
    return TwoTierSpec(
        final_model=final,
        draft_model=draft,
        candidates=candidates,
        keep=keep,
        selection=selection,
        cull=cull,
        template=template,
    )


def header_of(first_line: bytes | str) -> Mapping[str, Any] | None:
    """The header's fields when the line is a header (an object whose only member is
    "bananabatch"); None for any other line, including one that is not JSON."""
    text = first_line.decode("utf-8", "replace") if isinstance(first_line, bytes) else first_line
    if f'"{HEADER_FIELD}"' not in text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != {HEADER_FIELD}:
        return None
    inner = value[HEADER_FIELD]
    if not isinstance(inner, dict):
        raise SpecError(f'header line: "{HEADER_FIELD}" must be an object; found {inner!r}')
    return inner


def resolve_spec(
    header: Mapping[str, Any] | None, metadata: Mapping[str, str]
) -> TwoTierSpec | None:
    """The job's spec from its header and its upload metadata (which wins); None when the
    job is not two-tier (neither names a final model)."""
    given: dict[str, Any] = dict(header or {})
    for meta, name in (
        (META_FINAL_MODEL, "final_model"),
        (META_DRAFT_MODEL, "draft_model"),
        (META_CANDIDATES, "candidates"),
        (META_KEEP, "keep"),
        (META_SELECTION, "selection"),
    ):
        value = metadata.get(meta)
        if value:
            given[name] = value.strip()
    if header is None and "final_model" not in given:
        return None
    return spec_from_mapping(given, where="header line" if header is not None else "options")


# --- keys --------------------------------------------------------------------------------


def candidate_key(key: str, n: int) -> str:
    return f"{key}~c{n}"


def final_key(key: str, n: int) -> str:
    """A line's n-th final attempt (1-based): the line's own key first."""
    return key if n == 1 else f"{key}~f{n}"


def candidate_number(key: str, line_key: str) -> int | None:
    """n when `key` is candidate n of `line_key`."""
    if not key.startswith(line_key):
        return None
    match = _CANDIDATE.fullmatch(key, len(line_key))
    return int(match.group(1)) if match else None


def final_number(key: str, line_key: str) -> int | None:
    """n when `key` is final attempt n of `line_key`."""
    if key == line_key:
        return 1
    if not key.startswith(line_key):
        return None
    match = _FINAL.fullmatch(key, len(line_key))
    return int(match.group(1)) if match else None


def line_key_of(key: str) -> str:
    """The line a candidate or final key belongs to (keys of a two-tier file have no `~`)."""
    return key.split("~", 1)[0]
