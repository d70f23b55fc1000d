"""Lines served apart from batches, which get their item records at intake: urgent lines
(staged for the synchronous lane, which reads items), cache hits (CACHED at once) and
repeats of an earlier line of the file (pending duplicates that copy the first
occurrence's outcome when the job ends). There are few such lines, or they cost nothing:
they are handled one at a time and their records written in batches of writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from typing import IO

from bananabatch.core.estimate import lane_of
from bananabatch.core.intake import URGENT, AcceptedLine, FastLine
from bananabatch.core.pricing import Lane, LinePrices
from bananabatch.core.records import ItemRecord, JobRecord
from bananabatch.core.routing import GEMINI_STANDARD, LaneKind, Route, Router
from bananabatch.core.staging import IntakeTally
from bananabatch.core.states import ItemState
from bananabatch.pipeline import cache
from bananabatch.pipeline.lanes import ASYNC_KIND
from bananabatch.pipeline.runtime import Runtime
from bananabatch.pipeline.urgent import urgent_object_name

# Item records written per put_items call.
ITEM_FLUSH = 500


class ServedLines:
    """Serves lines for one intake; the urgent file is opened on the intake's stack."""

    def __init__(
        self,
        rt: Runtime,
        job: JobRecord,
        stack: ExitStack,
        prices: LinePrices,
        tally: IntakeTally,
        router: Router | None = None,
    ) -> None:
        self.rt = rt
        self.router = router
        self.job = job
        self.stack = stack
        self.prices = prices
        self.tally = tally
        self.items: list[ItemRecord] = []
        # Cache copies whose thumbnails are still to be made (cache.copy_into).
        self.thumbs: list[tuple[str, str]] = []
        self.urgent_sink: IO[bytes] | None = None

    def urgent(self, line: AcceptedLine, digest: str, route: Route | None = None) -> None:
        """A line routed to a synchronous lane (an urgent line, or a bulk line whose
        cheapest lane is one): staged with its providers in order, with its item written
        now (the lane reads items; there are few such lines)."""
        route = route or Route(LaneKind.SYNC, (GEMINI_STANDARD,), 0.0)
        rt = self.rt
        if self.urgent_sink is None:
            self.urgent_sink = self.stack.enter_context(
                rt.objects.open_write(
                    rt.settings.results_bucket,
                    urgent_object_name(self.job.job_id),
                    content_type="application/jsonl",
                )
            )
        flat = self._flat_prices(line, route)
        self.urgent_sink.write(_urgent_json(line, route, flat))
        standard = self.prices.line(line, Lane.STANDARD)
        price = flat.get(route.lane, standard)
        self.tally.estimates.add(price, standard)
        self.tally.urgent += 1
        lane = cache.LANE_URGENT if line.priority == URGENT else cache.LANE_SYNC
        self._add(self._item(line, digest, lane, attempt=1, estimated_usd=round(price, 6)))

    def _flat_prices(self, line: AcceptedLine, route: Route) -> dict[str, float]:
        """The per-image price of each of the route's lanes priced per image."""
        if self.router is None:
            return {}
        out: dict[str, float] = {}
        for offer in self.router.lanes:
            if offer.name in route.lanes and offer.name != GEMINI_STANDARD:
                price = self.router.price(offer, line.model, line.image_size, line.quality)
                if price is not None:
                    out[offer.name] = price
        return out

    def served(
        self, parsed: FastLine | AcceptedLine, digest: str, entry: cache.CacheEntry | None
    ) -> None:
        """A repeat of an earlier line of the file (entry None), or a cache hit."""
        line = parsed.accepted() if isinstance(parsed, FastLine) else parsed
        price = self.prices.line(line, lane_of(line))
        self.tally.estimates.add_saved(self.prices.line(line, Lane.STANDARD), price)
        saved = round(price, 6)
        item = self._item(line, digest, cache.LANE_DUPLICATE, saved_usd=saved)
        if entry is not None:
            # Copying costs nothing, so it may happen before the budget decision.
            uri = cache.copy_into(self.rt, item.job_id, line.key, entry, self.thumbs)
            item = item.model_copy(
                update={
                    "state": ItemState.CACHED,
                    "lane": cache.LANE_CACHE,
                    "image_uri": uri,
                    "mime_type": entry.mime_type,
                    "reason": f"cached: same request as job {entry.job_id} key {entry.key}",
                }
            )
        self._add(item)

    def finish(self) -> None:
        """Write the records still waiting."""
        self._flush(force=True)

    def _item(
        self,
        line: AcceptedLine,
        digest: str,
        lane: str,
        *,
        state: ItemState = ItemState.PENDING,
        attempt: int = 0,
        estimated_usd: float = 0.0,
        saved_usd: float | None = None,
        image_uri: str | None = None,
        mime_type: str | None = None,
        reason: str | None = None,
    ) -> ItemRecord:
        """The item record of a line served outside the batch lane."""
        return ItemRecord(
            job_id=self.job.job_id,
            key=line.key,
            line_no=line.line_no,
            state=state,
            model=line.model,
            aspect_ratio=line.aspect_ratio,
            image_size=line.image_size,
            prompt_preview=line.prompt_preview,
            request_hash=digest,
            lane=lane,
            attempt=attempt,
            estimated_usd=estimated_usd,
            saved_usd=saved_usd,
            image_uri=image_uri,
            mime_type=mime_type,
            reason=reason,
            updated_at=self.rt.now(),
        )

    def _add(self, item: ItemRecord) -> None:
        self.items.append(item)
        self._flush()

    def _flush(self, *, force: bool = False) -> None:
        if self.items and (force or len(self.items) >= ITEM_FLUSH):
            self.rt.repo.put_items(self.items)
            self.items.clear()
            cache.ask_thumbnails(self.rt, self.job.job_id, self.thumbs)


def _urgent_json(line: AcceptedLine, route: Route, prices: Mapping[str, float]) -> bytes:
    doc: dict[str, object] = {
        "key": line.key,
        "model": line.model,
        "request": line.request,
        "lanes": list(route.lanes),
    }
    if prices:
        doc["prices"] = dict(prices)
    if route.kind is LaneKind.ASYNC:
        doc["kind"] = ASYNC_KIND
    if route.lanes != (GEMINI_STANDARD,) and not line.native:
        # What a lane that does not speak Gemini's request builds its call from.
        doc["prompt"] = _prompt_of(line.request)
        doc["aspect_ratio"] = line.aspect_ratio
        doc["image_size"] = line.image_size
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _prompt_of(request: Mapping[str, object]) -> str:
    """A simple line's prompt: the text of its request's parts."""
    texts: list[str] = []
    contents = request.get("contents")
    for content in contents if isinstance(contents, list) else ():
        parts = content.get("parts") if isinstance(content, Mapping) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(str(part["text"]))
    return "\n".join(texts)
