"""The selection file of a two-tier job in manual selection: what the gallery downloads and
`bananabatch select JOB --file FILE` reads. Pure.

    {"job_id": "hero-c54c2e5f2c36", "selected": ["sku-01~c3", "sku-02~c1"]}

`job_id` may be left out; when given it must be the job's. Keys are candidate keys (K~cN).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from bananabatch.core.twotier.spec import candidate_number, line_key_of


class SelectionError(ValueError):
    """A selection that cannot be used; the message says why."""


def parse_selection(text: str | bytes, job_id: str) -> list[str]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SelectionError(f"the selection file is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("selected"), list):
        raise SelectionError(
            'the selection file must be {"job_id": ..., "selected": [candidate keys]}; '
            f"found {str(doc)[:120]}"
        )
    given = doc.get("job_id")
    if given is not None and given != job_id:
        raise SelectionError(f"the selection file is for job {given!r}, not {job_id!r}")
    keys: list[str] = doc["selected"]
    if not all(isinstance(k, str) for k in keys):
        raise SelectionError("every selected key must be a string")
    return keys


def check_keys(keys: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """The keys, deduplicated in order; raises naming those that are not candidates of the
    job with an image."""
    known = set(candidates)
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        raise SelectionError("nothing selected: name at least one candidate key (K~cN)")
    unknown = [k for k in wanted if k not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        hint = (
            ""
            if all(candidate_number(k, line_key_of(k)) for k in unknown)
            else (" (candidate keys end in ~cN, e.g. sku-1~c2)")
        )
        raise SelectionError(f"not a candidate of this job with an image: {shown}{hint}")
    return wanted


def selection_doc(job_id: str, keys: Iterable[str]) -> dict[str, object]:
    return {"job_id": job_id, "selected": sorted(set(keys))}
