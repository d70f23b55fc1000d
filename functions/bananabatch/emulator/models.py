"""The models the emulated service serves, as `models.list` / `models.get` answer them.

The real service lists every model it serves to the caller's project, image and text
alike, each with `supportedGenerationMethods` (the SDK maps it to `Model.supported_actions`);
`bananabatch doctor` reads it to see which catalog models take `batchGenerateContent`. The
emulator serves the catalog's image models (shut-down ones included: they stay as fixtures,
so tests can play a project that still has access) plus a few text and embedding models,
because the service runs text batches too.

Where the world is uncertain, EmulatorConfig.served_models plays either answer: the default
lists `gemini-nano-banana-2.1` WITHOUT `batchGenerateContent` (field-2026-12.md §1 row 2:
Developer API batch support unconfirmed); `served_models_with_batch` gives the other answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from bananabatch.core.catalog import MODELS, BatchSupport, canonical_model

GENERATE: Final = "generateContent"
COUNT_TOKENS: Final = "countTokens"
BATCH: Final = "batchGenerateContent"
CACHE: Final = "createCachedContent"
EMBED: Final = "embedContent"
BATCH_EMBED: Final = "asyncBatchEmbedContent"

Kind = Literal["image", "text", "embedding"]


@dataclass(frozen=True)
class ServedModel:
    model_id: str
    display_name: str
    kind: Kind
    methods: tuple[str, ...]
    input_token_limit: int
    output_token_limit: int
    version: str = "001"
    thinking: bool = False

    @property
    def name(self) -> str:
        return f"models/{self.model_id}"

    def supports(self, method: str) -> bool:
        return method in self.methods

    def to_json(self) -> dict[str, Any]:
        """A Model resource as the Developer API writes it (camelCase, ints as numbers)."""
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "displayName": self.display_name,
            "description": f"{self.display_name} (bananabatch emulator)",
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(self.methods),
        }
        if self.kind != "embedding":
            out |= {"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2}
        if self.thinking:
            out["thinking"] = True
        return out


def _image_models(batch_unknown: bool) -> tuple[ServedModel, ...]:
    out = []
    for spec in MODELS:
        methods: tuple[str, ...] = (GENERATE, COUNT_TOKENS)
        if spec.batch_support is BatchSupport.YES or (
            spec.batch_support is BatchSupport.UNKNOWN and batch_unknown
        ):
            methods += (BATCH,)
        out.append(
            ServedModel(
                model_id=spec.model_id,
                display_name=spec.display_name or spec.model_id,
                kind="image",
                methods=methods,
                input_token_limit=65_536 if spec.thinks else 32_768,
                output_token_limit=32_768,
                thinking=spec.thinks,
            )
        )
    return tuple(out)


TEXT_MODELS: Final = (
    ServedModel(
        "gemini-2.5-flash",
        "Gemini 2.5 Flash",
        "text",
        (GENERATE, COUNT_TOKENS, CACHE, BATCH),
        1_048_576,
        65_536,
        thinking=True,
    ),
    ServedModel(
        "gemini-2.5-flash-lite",
        "Gemini 2.5 Flash-Lite",
        "text",
        (GENERATE, COUNT_TOKENS, CACHE, BATCH),
        1_048_576,
        65_536,
        thinking=True,
    ),
    ServedModel(
        "gemini-2.5-pro",
        "Gemini 2.5 Pro",
        "text",
        (GENERATE, COUNT_TOKENS, CACHE, BATCH),
        1_048_576,
        65_536,
        thinking=True,
    ),
    ServedModel(
        "gemini-embedding-001",
        "Gemini Embedding 001",
        "embedding",
        (EMBED, COUNT_TOKENS, BATCH_EMBED),
        2_048,
        1,
    ),
)

#: The default answer: batch support only where a model page documents it.
DEFAULT_SERVED_MODELS: Final = _image_models(batch_unknown=False) + TEXT_MODELS
#: The other answer to field-2026-12.md §6 item 1: NB2.1 batches on the Developer API.
SERVED_MODELS_WITH_BATCH: Final = _image_models(batch_unknown=True) + TEXT_MODELS


class ModelDirectory:
    """Lookups over the served models; `models/x`, `x` and catalog aliases all resolve."""

    def __init__(self, models: Iterable[ServedModel]) -> None:
        self._models: Mapping[str, ServedModel] = {m.model_id: m for m in models}
        self._ordered = tuple(self._models.values())

    def get(self, model: str) -> ServedModel | None:
        bare = model.removeprefix("models/")
        return self._models.get(bare) or self._models.get(canonical_model(bare))

    def all(self) -> tuple[ServedModel, ...]:
        return self._ordered
