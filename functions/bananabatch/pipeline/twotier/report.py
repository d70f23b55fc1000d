"""What a two-tier job reports when it ends: each line's outcome, each stage's cost per
accepted image, the cull's reasons, and the rates it measured (kept for `estimate`); and,
while it waits for a person, the gallery of its candidates with ticks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from bananabatch.core.records import ItemRecord, JobRecord
from bananabatch.core.states import JobState
from bananabatch.core.twotier.cull import Verdict
from bananabatch.core.twotier.expand import TierLine
from bananabatch.core.twotier.plan import DELIVERED, RoundPlan
from bananabatch.core.twotier.rates import RateRow, encode_rows
from bananabatch.core.twotier.spec import TwoTierSpec, candidate_number, final_number, line_key_of
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.twotier import store
from bananabatch.report.gallery import SELECTABLE_OPTION

ATTEMPTED = frozenset({"SUCCEEDED", "CACHED", "FAILED", "BLOCKED"})


def _stage_of(item: ItemRecord, lines: Mapping[str, TierLine]) -> tuple[str, TierLine] | None:
    line = lines.get(line_key_of(item.key))
    if line is None:
        return None
    if candidate_number(item.key, line.key) is not None:
        return "draft", line
    if final_number(item.key, line.key) is not None:
        return "final", line
    return None


def build(
    rt: Runtime,
    job: JobRecord,
    spec: TwoTierSpec,
    lines: Sequence[TierLine],
    items: Iterable[ItemRecord],
    verdicts: Mapping[str, Verdict],
    sources: Mapping[str, str],
    selection: frozenset[str] | None,
    plan: RoundPlan,
) -> dict[str, Any]:
    del rt, sources
    by_key = {line.key: line for line in lines}
    stages: dict[str, dict[str, Any]] = {
        "draft": {"model": spec.draft_model, "images": 0, "accepted": 0, "actual_usd": 0.0},
        "final": {"model": spec.final_model, "images": 0, "accepted": 0, "actual_usd": 0.0},
    }
    rates: dict[tuple[str, str | None], list[int]] = {}
    culled: Counter[str] = Counter()
    for item in items:
        found = _stage_of(item, by_key)
        if found is None or item.state.value not in ATTEMPTED or item.batch_id is None:
            continue
        stage, line = found
        verdict = verdicts.get(item.key)
        delivered = item.state.value in DELIVERED
        if stage == "draft":
            number = candidate_number(item.key, line.key) or 0
            first = number <= line.candidates
            if spec.selection == "manual":
                accepted = selection is not None and item.key in selection and delivered
            else:
                accepted = delivered and verdict is not None and verdict.kept
        else:
            number = final_number(item.key, line.key) or 0
            wanted = (
                line.keep
                if spec.selection == "auto"
                else len([k for k in selection or () if line_key_of(k) == line.key])
            )
            first = number <= max(1, wanted)
            accepted = delivered and (verdict is None or verdict.kept)
        if verdict is not None and not verdict.kept and verdict.reason:
            culled[f"{stage}: {verdict.reason.split(':', 1)[0].split(' (', 1)[0]}"] += 1
        figures = stages[stage]
        figures["images"] += 1
        figures["accepted"] += int(accepted)
        figures["actual_usd"] += item.actual_usd or 0.0
        row = rates.setdefault((stage, line.template), [0, 0, 0])
        row[0] += 1
        row[1] += int(first)
        row[2] += int(accepted)
    for figures in stages.values():
        figures["actual_usd"] = round(figures["actual_usd"], 6)
        figures["cost_per_accepted_image_usd"] = (
            round(figures["actual_usd"] / figures["accepted"], 6) if figures["accepted"] else None
        )
    total = stages["draft"]["actual_usd"] + stages["final"]["actual_usd"]
    finals = stages["final"]["accepted"]
    outcomes = sorted(plan.outcomes.values(), key=lambda o: by_key[o.key].line_no)
    return {
        "spec": {
            "draft_model": spec.draft_model,
            "final_model": spec.final_model,
            "candidates": spec.candidates,
            "keep": spec.keep,
            "selection": spec.selection,
            "cull": spec.cull.to_doc(),
            "template": spec.template,
        },
        "lines": {
            "total": len(outcomes),
            "succeeded": sum(o.state == "SUCCEEDED" for o in outcomes),
            "failed": sum(o.state == "FAILED" for o in outcomes),
        },
        "stages": stages,
        # Both stages' cost over the finals delivered: what each image the user keeps cost.
        "cost_per_accepted_final_image_usd": round(total / finals, 6) if finals else None,
        "culled": dict(sorted(culled.items())),
        "line_outcomes": [
            {
                "key": o.key,
                "state": o.state,
                "accepted": list(o.accepted),
                "reason": o.reason,
                "drafts": o.drafts,
                "survivors": o.survivors,
                "finals": o.finals,
            }
            for o in outcomes
        ],
        "rates": [
            RateRow(
                stage,
                stages[stage]["model"],
                template,
                generated,
                first,
                accepted,
            ).to_doc()
            for (stage, template), (generated, first, accepted) in sorted(rates.items(), key=str)
        ],
    }


def write(rt: Runtime, job: JobRecord, spec: TwoTierSpec, doc: Mapping[str, Any]) -> None:
    del spec
    store.write_json(rt, store.name(job.job_id, store.REPORT_NAME), doc)
    rows = [RateRow.from_doc(row) for row in doc["rates"]]
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        f"{store.RATES_PREFIX}{job.job_id}.json",
        encode_rows(rows),
        content_type="application/json",
    )


def outcome(plan: RoundPlan, rejected: int) -> JobState:
    states = [o.state for o in plan.outcomes.values()]
    succeeded = states.count("SUCCEEDED")
    if succeeded and succeeded == len(states) and not rejected:
        return JobState.SUCCEEDED
    return JobState.PARTIAL if succeeded else JobState.FAILED


def write_selection_gallery(
    rt: Runtime, job: JobRecord, item_reports: Callable[[Runtime, JobRecord], Any]
) -> None:
    """The gallery of the candidates, each with a tick, and results.jsonl as it stands
    (item_reports: finalize.write_item_reports)."""
    shown = job.model_copy(update={"options": {**job.options, SELECTABLE_OPTION: "1"}})
    tally = item_reports(rt, shown)
    for file in tally.gallery.files(shown):
        rt.objects.write_bytes(
            rt.settings.results_bucket,
            f"jobs/{job.job_id}/{file.name}",
            file.data,
            content_type=file.content_type,
        )
