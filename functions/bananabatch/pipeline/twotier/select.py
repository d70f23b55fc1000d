"""`bananabatch select`: a person's choice of candidates for a two-tier job in manual
selection, recorded once; the caller then has the finals staged (finalize_job_if_done, as
any round) and submitted, or leaves both to the next tick. The selection object is written
create-if-absent: a second, different selection is refused rather than paid for; the same
one again changes nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from bananabatch.core.states import BatchState, JobState
from bananabatch.core.twotier.plan import DELIVERED
from bananabatch.core.twotier.selection import check_keys, selection_doc
from bananabatch.core.twotier.spec import candidate_number, line_key_of
from bananabatch.errors import PermanentError
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import store

_OPEN = frozenset(BatchState) - {BatchState.COLLECTED}


@dataclass(frozen=True)
class Selected:
    job_id: str
    keys: list[str]
    lines: int
    lines_without: int
    # False when the same selection was already recorded.
    recorded: bool


def select(rt: Runtime, job_id: str, keys: Sequence[str]) -> Selected:
    job = rt.repo.require_job(job_id)
    spec = store.spec_of(job)
    if spec is None:
        raise PermanentError(
            f"job {job_id} is not a two-tier job; nothing to select", job_id=job_id
        )
    if spec.selection != "manual":
        raise PermanentError(
            f"job {job_id} selects automatically (selection: {spec.selection}); "
            'submit it with "selection": "manual" to choose by hand',
            job_id=job_id,
        )
    if job.state is not JobState.RUNNING:
        raise PermanentError(
            f"job {job_id} is {job.state.value}; a selection is taken while it runs", job_id=job_id
        )
    lines = {line.key for line in store.tier_lines(rt, job_id)}
    candidates = [
        item.key
        for item in rt.repo.items(job_id)
        if item.state.value in DELIVERED
        and line_key_of(item.key) in lines
        and candidate_number(item.key, line_key_of(item.key)) is not None
    ]
    try:
        wanted = check_keys(keys, candidates)
    except ValueError as exc:
        raise PermanentError(f"job {job_id}: {exc}", job_id=job_id) from None
    chosen_lines = {line_key_of(k) for k in wanted}
    before = store.selection(rt, job_id)
    if before is not None:
        if before != frozenset(wanted):
            raise PermanentError(
                f"job {job_id} already has a selection of {len(before)} candidates; "
                "it is not changed (its finals may be paid for already)",
                job_id=job_id,
            )
        return Selected(job_id, wanted, len(chosen_lines), len(lines - chosen_lines), False)
    if rt.repo.count_batches(job_id=job_id, states=_OPEN):
        raise PermanentError(
            f"job {job_id} still has drafts running; select once they are all back "
            "(bananabatch watch shows when)",
            job_id=job_id,
        )
    doc = selection_doc(job_id, wanted)
    recorded = rt.objects.write_bytes(
        rt.settings.results_bucket,
        store.name(job_id, store.SELECTION_NAME),
        (json.dumps(doc, indent=2) + "\n").encode(),
        content_type="application/json",
        if_absent=True,
    )
    if not recorded and store.selection(rt, job_id) != frozenset(wanted):
        raise PermanentError(
            f"job {job_id}: another selection was recorded at the same moment; it stands",
            job_id=job_id,
        )
    return Selected(job_id, wanted, len(chosen_lines), len(lines - chosen_lines), recorded)
