"""The shape of a catalog entry: what an image model is, who serves it, where it stands in
its life. Pure types; the entries themselves are catalog.py's (Gemini) and
catalog_openai.py's (OpenAI gpt-image), and catalog.py is where the rest of the code reads
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class Status(StrEnum):
    """Where a model stands on a given day."""

    GA = "ga"
    #: Still served, but announced to go away: accepted, with a warning in summary.json.
    DEPRECATED = "deprecated"
    #: Served only to projects that used it before: accepted, with a warning.
    RESTRICTED = "restricted"
    #: No longer served: a line naming it is rejected at intake, naming the replacement.
    SHUT_DOWN = "shut_down"


class Provider(StrEnum):
    """Who serves a model, and so which batch provider adapter runs its batches. A batch
    holds one model, so it has one provider (BatchRecord.provider); a job may have
    batches of several."""

    GEMINI = "gemini"
    OPENAI = "openai"


class BatchSupport(StrEnum):
    """Whether a Google model page documents Batch API support for the model."""

    YES = "yes"
    NO = "no"
    #: Not documented either way: accepted with a warning until a real batch job succeeds.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Lifecycle:
    """The dated events of a model's life, with where each was read."""

    source: str
    released: date | None = None
    deprecated: date | None = None
    restricted: date | None = None
    shutdown: date | None = None
    # What to use instead, once the model is deprecated or gone.
    replacement: str | None = None
    # Conflicts and uncertainty about these dates, said plainly.
    note: str = ""

    def status_on(self, day: date) -> Status:
        if self.shutdown is not None and day >= self.shutdown:
            return Status.SHUT_DOWN
        if self.restricted is not None and day >= self.restricted:
            return Status.RESTRICTED
        if self.deprecated is not None and day >= self.deprecated:
            return Status.DEPRECATED
        return Status.GA


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    aliases: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    # Empty when the model has a single size and imageSize must not be sent.
    image_sizes: tuple[str, ...]
    default_size: str
    image_tokens: Mapping[str, int]
    max_reference_images: int
    # Typical non-image output the model adds per request (text and thinking tokens), used
    # by estimates; actual cost always comes from usageMetadata. Gemini 3 image models always
    # think: 178 is the mean of the emulator's deterministic 100..256 thought tokens, so an
    # estimate lands within 1 % of an emulated job's actual cost (IMAGE-only output has no
    # text tokens). Real thought counts vary more; observed rates correct the estimate.
    typical_text_tokens: int
    typical_thought_tokens: int
    lifecycle: Lifecycle
    batch_support: BatchSupport
    batch_source: str
    display_name: str = ""
    # Sizes whose token count is inferred rather than published (estimates are uncertain).
    uncertain_tokens: tuple[str, ...] = ()
    # Anything else about this entry that is not confirmed (ratios, limits), said plainly.
    notes: tuple[str, ...] = ()
    provider: Provider = Provider.GEMINI
    # OpenAI image models: the pixel size each aspect ratio maps to (image_sizes are those
    # sizes), the qualities and output formats a line may ask for, and the defaults a line
    # that asks for none gets. Empty for Gemini models, which take none of these.
    size_by_ratio: Mapping[str, str] = field(default_factory=dict)
    qualities: tuple[str, ...] = ()
    default_quality: str | None = None
    output_formats: tuple[str, ...] = ()
    default_output_format: str | None = None

    @property
    def thinks(self) -> bool:
        return self.typical_thought_tokens > 0

    def status_on(self, day: date) -> Status:
        return self.lifecycle.status_on(day)
