"""Accept and regeneration rates measured on finished two-tier jobs, and the effective cost
per accepted image they give (issue 21). Pure.

A finished job records, per stage, per model and per prompt template (none when the lines
came from no template), how many images were generated, how many of those were first
attempts, and how many were accepted: a draft is accepted when it survived the cull (or, in
a manual selection, when the person selected it), a final when it was delivered and not
culled. From the sums over jobs:

    accept rate       = accepted / generated
    regeneration rate = (generated - first attempts) / first attempts
    cost per accepted = price x (1 + regeneration rate) / accept rate

with the number of images they were measured from, so a figure from 8 images is read as
such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

STAGES: Final = ("draft", "final")


@dataclass(frozen=True, slots=True)
class RateRow:
    """One job's (or a sum's) counts for one stage, model and template."""

    stage: str
    model: str
    template: str | None
    generated: int
    first_attempts: int
    accepted: int

    @property
    def accept_rate(self) -> float | None:
        return self.accepted / self.generated if self.generated else None

    @property
    def regeneration_rate(self) -> float | None:
        if not self.first_attempts:
            return None
        return (self.generated - self.first_attempts) / self.first_attempts

    def to_doc(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model,
            "template": self.template,
            "generated": self.generated,
            "first_attempts": self.first_attempts,
            "accepted": self.accepted,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RateRow:
        def count(name: str) -> int:
            value = doc.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"rate row: {name}: expected a count; found {value!r}")
            return value

        stage, model, template = doc.get("stage"), doc.get("model"), doc.get("template")
        if stage not in STAGES or not isinstance(model, str):
            raise ValueError(f"rate row: expected a stage and a model; found {doc!r}")
        if template is not None and not isinstance(template, str):
            raise ValueError(f"rate row: template: expected a string; found {template!r}")
        generated, first, accepted = count("generated"), count("first_attempts"), count("accepted")
        if first > generated or accepted > generated:
            raise ValueError(f"rate row: counts do not add up: {doc!r}")
        return cls(stage, model, template, generated, first, accepted)


def encode_rows(rows: Iterable[RateRow]) -> bytes:
    return json.dumps({"rows": [r.to_doc() for r in rows]}, sort_keys=True).encode()


def decode_rows(data: bytes) -> list[RateRow]:
    doc = json.loads(data)
    return [RateRow.from_doc(row) for row in doc.get("rows", [])]


def combine(rows: Iterable[RateRow]) -> dict[tuple[str, str, str | None], RateRow]:
    """Sums per (stage, model, template), and per (stage, model, None) over all templates."""
    sums: dict[tuple[str, str, str | None], list[int]] = {}
    for row in rows:
        keys = {(row.stage, row.model, row.template), (row.stage, row.model, None)}
        for key in keys:
            total = sums.setdefault(key, [0, 0, 0])
            total[0] += row.generated
            total[1] += row.first_attempts
            total[2] += row.accepted
    return {
        key: RateRow(key[0], key[1], key[2], *counts)
        for key, counts in sorted(sums.items(), key=str)
    }


def effective_cost(price: float, row: RateRow | None) -> float | None:
    """price x (1 + regeneration rate) / accept rate; the bare price without measurements;
    None when nothing measured was ever accepted."""
    if row is None or not row.generated:
        return price
    accept = row.accept_rate
    if not accept:
        return None
    return price * (1.0 + (row.regeneration_rate or 0.0)) / accept


@dataclass(frozen=True, slots=True)
class RateLine:
    stage: str
    model: str
    template: str | None
    price: float
    row: RateRow | None

    @property
    def effective(self) -> float | None:
        return effective_cost(self.price, self.row)

    def describe(self) -> str:
        where = f"{self.stage} {self.model}" + (
            f" (template {self.template})" if self.template else ""
        )
        if self.row is None or not self.row.generated:
            return f"{where}: ${self.price:.4f} per image; no measured rates yet (all accepted)"
        accept, regen = self.row.accept_rate or 0.0, self.row.regeneration_rate or 0.0
        cost = self.effective
        shown = "never accepted" if cost is None else f"${cost:.4f} per accepted image"
        return (
            f"{where}: ${self.price:.4f} x (1 + {regen:.0%} regenerated) / {accept:.0%} accepted"
            f" = {shown}, measured on {self.row.generated:,} images"
        )


def rate_lines(
    wanted: Iterable[tuple[str, str, str | None, float]],
    measured: Mapping[tuple[str, str, str | None], RateRow],
) -> list[RateLine]:
    """For each (stage, model, template, price) the estimate shows: the template's own
    measurements when there are some, else the model's over all templates."""
    out = []
    for stage, model, template, price in wanted:
        row = measured.get((stage, model, template)) if template else None
        if row is None:
            row = measured.get((stage, model, None))
        out.append(RateLine(stage, model, template if row and row.template else None, price, row))
    return out
