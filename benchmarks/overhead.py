"""Cloud overhead per image: the Firestore, Cloud Storage, Pub/Sub and Cloud Functions
operations the pipeline performs, counted on a real run of the local emulated stack, priced
at published list prices, as a fraction of the image's batch price. Target: <= 0.5 %.

Counting: the ports are wrapped in counting proxies. StateStore: get = 1 read, query = 1
read per document returned (Firestore bills at least 1 per query), get_many = 1 read per
document asked for, count = 1 read (an aggregation over < 1000 entries), create/set/delete =
1 write, update = 1 read + 1 write (a transaction), set_many = 1 write per document.
ObjectStore: writes and lists are class A, reads and stats class B, deletes free. EventBus:
each publish is billed twice (publish and push delivery), at least 1 KB each. Function
invocations are the local runner's deliveries (thumbnails messages included); their wall
time is billed at 1 vCPU and 512 MiB. That time is on this machine, with the
emulator (which renders images) running in-process, so it overstates real function time.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import OUT, fresh_dir, local_settings, write_prompts

# List prices, USD. Sources (read 2026-11): cloud.google.com/firestore/pricing (Standard
# edition, us-central1: $0.06 per 100k document reads, $0.18 per 100k writes, $0.02 per 100k
# deletes); cloud.google.com/storage/pricing (Standard, regional: class A $0.005 per 1,000
# operations, class B $0.0004 per 1,000); cloud.google.com/pubsub/pricing (message delivery
# $40 per TiB, minimum 1,000 bytes per message); cloud.google.com/functions/pricing
# (2nd gen is billed as Cloud Run: $0.40 per million invocations beyond the free tier; Tier 1
# request-based CPU $0.000024 per vCPU-second, memory $0.0000025 per GiB-second).
FIRESTORE_READ = 0.06 / 100_000
FIRESTORE_WRITE = 0.18 / 100_000
FIRESTORE_DELETE = 0.02 / 100_000
GCS_CLASS_A = 0.005 / 1_000
GCS_CLASS_B = 0.0004 / 1_000
PUBSUB_PER_BYTE = 40.0 / 2**40
PUBSUB_MIN_BYTES = 1_000
INVOCATION = 0.40 / 1_000_000
VCPU_SECOND = 0.000024
GIB_SECOND = 0.0000025
FUNCTION_VCPU = 1.0
FUNCTION_GIB = 0.5

OVERHEAD_TARGET = 0.005

_STATE_OPS = {
    "get",
    "get_many",
    "create",
    "set",
    "update",
    "set_many",
    "query",
    "count",
    "delete",
}
_OBJECT_A = {"open_write", "write_bytes", "list", "copy"}
_OBJECT_B = {"open_read", "read_bytes", "stat"}


class CountingState:
    """A StateStore proxy counting billable document reads and writes."""

    def __init__(self, inner: Any, counts: Counter[str]) -> None:
        self._inner, self._counts = inner, counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _STATE_OPS:
            return attr
        counts = self._counts

        def call(*args: Any, **kwargs: Any) -> Any:
            if name == "set_many":
                docs = list(args[0] if args else kwargs["docs"])
                counts["firestore_write"] += len(docs)
                return attr(docs, *args[1:], **kwargs)
            if name == "query":
                return _counted(attr(*args, **kwargs), counts)
            if name == "get_many":
                collection = args[0] if args else kwargs["collection"]
                ids = list(args[1] if len(args) > 1 else kwargs["ids"])
                counts["firestore_read"] += len(ids)
                return attr(collection, ids)
            if name in ("get", "count"):
                counts["firestore_read"] += 1
            elif name == "update":
                counts["firestore_read"] += 1
                counts["firestore_write"] += 1
            elif name == "delete":
                counts["firestore_delete"] += 1
            else:
                counts["firestore_write"] += 1
            return attr(*args, **kwargs)

        return call


def _counted(docs: Any, counts: Counter[str]) -> Any:
    counts["firestore_read"] += 1  # the minimum charge; the first document is included
    for n, doc in enumerate(docs):
        if n:
            counts["firestore_read"] += 1
        yield doc


class CountingObjects:
    """An ObjectStore proxy counting Cloud Storage class A and class B operations."""

    def __init__(self, inner: Any, counts: Counter[str]) -> None:
        self._inner, self._counts = inner, counts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in _OBJECT_A:
            kind = "gcs_class_a"
        elif name in _OBJECT_B:
            kind = "gcs_class_b"
        else:
            return attr
        counts = self._counts

        def call(*args: Any, **kwargs: Any) -> Any:
            counts[kind] += 1
            return attr(*args, **kwargs)

        return call


def count_run(lines: int, root: Path, base_url: str) -> dict[str, Any]:
    """Run one job of `lines` prompts end to end; the operation counts and the job."""
    from bananabatch.local.runner import LocalPipeline
    from bananabatch.pipeline.runtime import Runtime
    from bananabatch.wiring import build_runtime

    counts: Counter[str] = Counter()
    base = build_runtime(local_settings(root / "state", base_url))
    runtime = Runtime(
        settings=base.settings,
        objects=CountingObjects(base.objects, counts),
        state=CountingState(base.state, counts),
        bus=base.bus,
        provider=base.provider,
        prices=base.prices,
    )
    bus_publish = base.bus.publish

    def publish(topic: str, data: bytes, attributes: Any) -> str:
        billed = max(
            PUBSUB_MIN_BYTES, len(data) + sum(len(k) + len(v) for k, v in attributes.items())
        )
        counts["pubsub_messages"] += 1
        counts["pubsub_bytes"] += 2 * billed  # published, then delivered
        return bus_publish(topic, data, attributes)

    base.bus.publish = publish  # type: ignore[method-assign]
    pipeline = LocalPipeline(runtime)
    deliver = pipeline.deliver
    busy = [0.0]

    def timed_deliver(function: str, attributes: Any, data: Any) -> None:
        started = time.perf_counter()
        try:
            deliver(function, attributes, data)
        finally:
            busy[0] += time.perf_counter() - started

    pipeline.deliver = timed_deliver  # type: ignore[method-assign]
    prompts = write_prompts(root / "prompts.jsonl", lines)
    try:
        result = pipeline.run_job(prompts, tick_interval=0.0, timeout=300)
    finally:
        pipeline.close()
    invocations = sum(result.deliveries.values())
    return {
        "counts": dict(counts),
        "invocations": invocations,
        "deliveries": result.deliveries,
        "function_seconds": busy[0],
        "job_state": result.job.state.value,
        "images": result.summary.get("counts", {}).get("SUCCEEDED", 0),
        "model": result.job.default_model,
    }


def price(counted: dict[str, Any]) -> dict[str, float]:
    counts = counted["counts"]
    seconds = counted["function_seconds"]
    return {
        "firestore": counts.get("firestore_read", 0) * FIRESTORE_READ
        + counts.get("firestore_write", 0) * FIRESTORE_WRITE
        + counts.get("firestore_delete", 0) * FIRESTORE_DELETE,
        "storage": counts.get("gcs_class_a", 0) * GCS_CLASS_A
        + counts.get("gcs_class_b", 0) * GCS_CLASS_B,
        "pubsub": counts.get("pubsub_bytes", 0) * PUBSUB_PER_BYTE,
        "functions": counted["invocations"] * INVOCATION
        + seconds * (FUNCTION_VCPU * VCPU_SECOND + FUNCTION_GIB * GIB_SECOND),
    }


def run(*, lines: int = 200) -> dict[str, Any]:
    from bananabatch.core.pricing import Lane, PriceBook
    from bananabatch.emulator import EmulatorConfig, EmulatorServer

    work = fresh_dir(OUT / "overhead")
    config = EmulatorConfig(pending_seconds=0.0, running_seconds=0.0, workdir=work / "emulator")
    with EmulatorServer(config) as emulator:
        counted = count_run(lines, work, emulator.base_url)
    images = max(1, counted["images"])
    costs = price(counted)
    per_image = {k: v / images for k, v in costs.items()}
    overhead = sum(per_image.values())
    image_price = PriceBook().image_price(counted["model"], None, Lane.BATCH)
    fraction = overhead / image_price
    print(f"\n== cloud overhead: one job of {lines} lines, {counted['images']} images ==")
    c = counted["counts"]
    print(
        "  per image: Firestore {r:.2f} reads {w:.2f} writes; Cloud Storage {a:.2f} class A "
        "{b:.2f} class B; Pub/Sub {m:.3f} messages; {i:.3f} invocations, {s:.3f} s".format(
            r=c.get("firestore_read", 0) / images,
            w=c.get("firestore_write", 0) / images,
            a=c.get("gcs_class_a", 0) / images,
            b=c.get("gcs_class_b", 0) / images,
            m=c.get("pubsub_messages", 0) / images,
            i=counted["invocations"] / images,
            s=counted["function_seconds"] / images,
        )
    )
    print("  USD per image: " + ", ".join(f"{k} {v:.8f}" for k, v in per_image.items()))
    print(
        f"  overhead {overhead:.8f} USD / batch price {image_price:.4f} USD "
        f"({counted['model']}, 1K) = {fraction:.4%} "
        f"(target <= {OVERHEAD_TARGET:.1%}: {'met' if fraction <= OVERHEAD_TARGET else 'NOT met'})"
    )
    return {"counted": counted, "per_image": per_image, "fraction": fraction}
