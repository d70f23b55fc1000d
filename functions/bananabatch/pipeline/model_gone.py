"""A model the provider no longer serves for batches: "model not found / not supported" at
create (field-2026-12 §1 row 4, §6 row 2). A permanent error for that model, never a retry
loop, and never a silent switch.

The first refusal records the model in the pause document (`models_gone`), logs ERROR and
publishes one `model_unavailable` alert on the completions topic. From then on no create is
tried for that model: each of its batches, when its turn comes, either moves to the fallback
model the owner configured (BANANABATCH_FALLBACK_MODEL) or, without one, fails with the
provider's answer. A fallback changes price and quality, so it is said everywhere: in the
alert, in the job's warnings (summary.json) with the number of items moved, and in the logs;
and it runs only when the fallback can serve every item of the batch (sizes and ratios from
the catalog) and its extra estimated cost fits the job and daily budgets.

`bananabatch resume` forgets the gone models, for the day a model is served again (the
shutdown date of gemini-3.1-flash-image is itself in dispute).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bananabatch.core import alerts
from bananabatch.core.catalog import (
    ModelSpec,
    Provider,
    Status,
    canonical_model,
    model_spec,
    provider_of,
)
from bananabatch.core.pricing import Lane
from bananabatch.core.records import BatchRecord, ItemRecord, JobRecord
from bananabatch.core.states import ITEM_TERMINAL, BatchState, ItemState
from bananabatch.errors import PermanentError
from bananabatch.log import get_logger
from bananabatch.pipeline import budget, lifecycle, pause
from bananabatch.pipeline.repo import Move
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import Doc

log = get_logger(__name__)

_GONE: Final = "models_gone"


def gone_models(rt: Runtime, doc: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Canonical model id -> the provider's answer, for every model recorded as gone."""
    source = doc if doc is not None else rt.state.get(pause.PAUSE_PATH)
    entries = (source or {}).get(_GONE) or {}
    return {
        str(model): str(entry.get("reason") or "not served")
        for model, entry in entries.items()
        if isinstance(entry, Mapping)
    }


def record_gone(rt: Runtime, model: str, reason: str) -> bool:
    """Remember that the provider does not serve `model` for batches. True if this call
    recorded it first (it then logs ERROR and publishes the one alert)."""
    name = canonical_model(model)
    now = rt.now()
    first = {"first": False}

    def fn(doc: Doc | None) -> Doc | None:
        entries = dict((doc or {}).get(_GONE) or {})
        first["first"] = name not in entries
        if not first["first"]:
            return None
        entries[name] = {"reason": reason, "since": now.isoformat()}
        return dict(doc or {}) | {_GONE: entries}

    rt.state.update(pause.PAUSE_PATH, fn)
    if not first["first"]:
        return False
    fallback = rt.settings.fallback_model
    log.error(
        "the provider does not serve this model for batches; no create is tried for it again",
        extra={"model": name, "error": reason, "fallback_model": fallback},
    )
    if fallback:
        action = (
            f"its items move to the fallback model {fallback} (BANANABATCH_FALLBACK_MODEL; "
            f"price and quality differ, see each job's warnings); `bananabatch resume` tries "
            f"{name} again"
        )
    else:
        action = (
            f"its batches fail; set BANANABATCH_FALLBACK_MODEL to move them to another model, "
            f"or resubmit the lines with another model; `bananabatch resume` tries {name} again"
        )
    pause.publish_alert(
        rt,
        alerts.alert_message(
            alert="model_unavailable",
            severity="ERROR",
            reason=f"model {name}: {reason}",
            at=now,
            paused=False,
            action=action,
            extra={"model": name, "fallback": fallback},
        ),
    )
    return True


def forget(rt: Runtime) -> list[str]:
    """Drop every gone model (`bananabatch resume`); returns their ids."""
    dropped: list[str] = []

    def fn(doc: Doc | None) -> Doc | None:
        dropped.clear()
        entries = (doc or {}).get(_GONE) or {}
        if not entries:
            return None
        dropped.extend(sorted(entries))
        return dict(doc or {}) | {_GONE: {}}

    rt.state.update(pause.PAUSE_PATH, fn)
    if dropped:
        log.warning("models marked as not served will be tried again", extra={"models": dropped})
    return dropped


def handle(rt: Runtime, batch: BatchRecord, reason: str) -> Move[BatchRecord]:
    """A claimed (SUBMITTING) batch whose model is gone: to the fallback model, back in the
    queue, when one is configured and can take it; else FAILED with the reason (the
    caller announces a batch this call moved to FAILED)."""
    items = [i for i in rt.repo.items_of_batch(batch).values() if i.state not in ITEM_TERMINAL]
    job = rt.repo.get_job(batch.job_id)
    plan = _plan(rt, batch, job, items)
    if isinstance(plan, str):
        failure = f"{reason}; {plan}"
        log.error("batch failed: its model is not served", extra={"error": failure})
        # The items fail here, with the reason, so that no retry batch asks for the same
        # model again (a retry is for rows, not for a model the provider does not serve).
        now = rt.now()
        rt.repo.put_items(
            item.model_copy(
                update={"state": ItemState.FAILED, "reason": failure, "updated_at": now}
            )
            for item in items
        )
        return rt.repo.move_batch(
            batch.batch_id,
            BatchState.FAILED,
            expect={BatchState.SUBMITTING},
            change=lambda _b: {
                "provider_error": failure,
                "submitting_since": None,
                "finished_at": rt.now(),
                "updated_at": rt.now(),
            },
        )
    fallback, per_item = plan
    assert job is not None
    now = rt.now()
    rt.repo.put_items(
        item.model_copy(
            update={
                "model": fallback,
                "estimated_usd": round(per_item[item.key], 6),
                "state": ItemState.PENDING,
                "updated_at": now,
            }
        )
        for item in items
    )
    extra = sum(per_item[i.key] - i.estimated_usd for i in items)
    warning = (
        f"{len(items)} item(s) of batch {batch.index} moved from {canonical_model(batch.model)} "
        f"to the fallback model {fallback}: the provider does not serve "
        f"{canonical_model(batch.model)} for batches ({reason}); price and quality differ "
        f"(estimate {'+' if extra >= 0 else '-'}${abs(extra):.4f})"
    )
    lifecycle.add_warning(rt, job.job_id, warning, extra_estimate_usd=extra)
    log.warning(
        "batch moved to the fallback model",
        extra={"model": batch.model, "fallback_model": fallback, "items": len(items)},
    )
    return rt.repo.move_batch(
        batch.batch_id,
        BatchState.QUEUED,
        expect={BatchState.SUBMITTING},
        change=lambda _b: {
            "model": fallback,
            "next_submit_after": None,
            "submitting_since": None,
            "updated_at": rt.now(),
        },
    )


def _plan(
    rt: Runtime, batch: BatchRecord, job: JobRecord | None, items: list[ItemRecord]
) -> tuple[str, dict[str, float]] | str:
    """(fallback model, each item's new estimate), or why the batch cannot fall back."""
    fallback = rt.settings.fallback_model
    if not fallback:
        return "no fallback model is configured (BANANABATCH_FALLBACK_MODEL)"
    if batch.members:
        # The fallback's extra cost is reserved per job, and a shared batch of the batch
        # window (pipeline/pack.py) has several.
        return "a shared batch of the batch window does not fall back to another model"
    if job is None or not job.may_spend:
        return "its job no longer spends"
    found = _servable_fallback(rt, batch, fallback)
    if isinstance(found, str):
        return found
    name, spec = found
    unfit = _unfit_item(name, spec, items)
    if unfit is not None:
        return unfit
    try:
        per_item = {i.key: _estimate(rt, batch.model, name, i) for i in items}
    except PermanentError as exc:
        return f"no price for the fallback model {name}: {exc}"
    extra = sum(per_item[i.key] - i.estimated_usd for i in items)
    if extra > 0:
        refused = budget.reserve_fallback(rt, job, batch.batch_id, extra)
        if refused is not None:
            return f"the fallback model {name} costs more and {refused}"
    return name, per_item


def _servable_fallback(
    rt: Runtime, batch: BatchRecord, fallback: str
) -> tuple[str, ModelSpec] | str:
    """The fallback's canonical name and catalog entry, or why it cannot take the batch."""
    name = canonical_model(fallback)
    if name == canonical_model(batch.model):
        return f"the fallback model {fallback} is this model"
    if name in gone_models(rt):
        return f"the fallback model {name} is not served either"
    spec = model_spec(name)
    if spec is None:
        return f"the fallback model {fallback} is not in the model catalog (unknown sizes, price)"
    if spec.status_on(rt.now().date()) is Status.SHUT_DOWN:
        return f"the fallback model {name} is shut down"
    # The staged request file is the provider's own format, and an OpenAI line names its
    # model inside its body: only a Gemini batch can change model in place.
    provider = provider_of(batch.model)
    if provider is not Provider.GEMINI or spec.provider is not provider:
        return (
            f"the fallback model {name} ({spec.provider.value}) cannot take a batch of "
            f"{batch.model} ({provider.value}): its requests were staged for that model"
        )
    return name, spec


def _unfit_item(name: str, spec: ModelSpec, items: list[ItemRecord]) -> str | None:
    """Why the fallback cannot make one of the items (its size or ratio), if it cannot."""
    for item in items:
        if item.image_size is not None and item.image_size not in spec.image_sizes:
            return (
                f"the fallback model {name} cannot make item {item.key!r} at size "
                f"{item.image_size} (it makes {', '.join(spec.image_sizes) or 'one size only'})"
            )
        if item.aspect_ratio is not None and item.aspect_ratio not in spec.aspect_ratios:
            return (
                f"the fallback model {name} cannot make item {item.key!r} at ratio "
                f"{item.aspect_ratio}"
            )
    return None


def _estimate(rt: Runtime, model: str, fallback: str, item: ItemRecord) -> float:
    """The item's estimate on the fallback: scaled by the two models' request prices when
    both are known (the prompt's share scales with it), else the fallback's own price."""
    new = rt.prices.estimate_request(fallback, item.image_size, Lane.BATCH)
    try:
        old = rt.prices.estimate_request(model, item.image_size, Lane.BATCH)
    except PermanentError:
        return max(new, item.estimated_usd)
    if old <= 0 or item.estimated_usd <= 0:
        return new
    return item.estimated_usd * new / old
