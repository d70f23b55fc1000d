"""What a classified result does to its item, shared by the batch collector and the
urgent lane: state, reason, usage and cost fields, and where the image and thumbnail go."""

from __future__ import annotations

from typing import Any

from bananabatch.core import records as rec
from bananabatch.core.limits import header_safe
from bananabatch.core.pricing import Lane
from bananabatch.core.records import ItemRecord
from bananabatch.core.results import Outcome
from bananabatch.errors import BananaError, PriceUnknown
from bananabatch.log import get_logger
from bananabatch.pipeline.runtime import Runtime
from bananabatch.report.thumbs import THUMB_CONTENT_TYPE, make_thumbnail, thumb_object_name

log = get_logger(__name__)


def outcome_fields(rt: Runtime, item: ItemRecord, outcome: Outcome, lane: Lane) -> dict[str, Any]:
    """The item fields an outcome sets, with the actual cost at the lane's prices."""
    fields: dict[str, Any] = {
        "state": outcome.item_state(),
        "finish_reason": outcome.finish_reason,
        "error_code": outcome.error_code,
        "reason": outcome.reason(),
        "updated_at": rt.now(),
    }
    if outcome.usage is not None:
        fields["usage"] = {
            "prompt_tokens": outcome.usage.prompt_tokens,
            "image_output_tokens": outcome.usage.image_output_tokens,
            "text_output_tokens": outcome.usage.text_output_tokens,
            "thought_tokens": outcome.usage.thought_tokens,
            "total_tokens": outcome.usage.total_tokens,
        }
        try:
            fields["actual_usd"] = round(
                rt.prices.cost_of_usage(item.model, lane, outcome.usage), 6
            )
        except PriceUnknown as exc:
            log.error("no price for a billed result; cost left unknown", extra={"error": str(exc)})
    return fields


def image_location(rt: Runtime, item: ItemRecord, mime: str) -> tuple[str, dict[str, Any]]:
    """The image's object name and the item fields that point at it."""
    name = rec.image_object_name(item.job_id, item.key, mime)
    return name, {
        "image_uri": rt.objects.uri(rt.settings.results_bucket, name),
        "mime_type": mime,
    }


def write_cost(image: bytes) -> int:
    """The memory write_image holds for an image: its encoded bytes (it decodes nothing;
    thumbnails are made elsewhere, see pipeline/thumbnails.py)."""
    return len(image)


def write_image(rt: Runtime, item: ItemRecord, name: str, image: bytes, mime: str) -> None:
    """Write the image (idempotent: its name derives from the key)."""
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        name,
        image,
        content_type=mime,
        metadata={"job_id": item.job_id, "key": header_safe(item.key)},
    )


def write_thumbnail_if_decodable(rt: Runtime, item: ItemRecord, image: bytes) -> bool:
    """Make and write the image's thumbnail in place, for the few images of the urgent
    lane; an undecodable image gets none (the gallery then shows the image itself)."""
    try:
        thumb = make_thumbnail(image)
    except BananaError as exc:
        log.warning(
            "no thumbnail: the image does not decode",
            extra={"job_id": item.job_id, "key": item.key, "error": str(exc)},
        )
        return False
    rt.objects.write_bytes(
        rt.settings.results_bucket,
        thumb_object_name(item.job_id, item.key),
        thumb,
        content_type=THUMB_CONTENT_TYPE,
    )
    return True
