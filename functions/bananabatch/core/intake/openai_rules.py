"""The rules of lines for OpenAI's gpt-image models, each written once with its message:
what a gpt-image line may ask (size from its aspect ratio, quality, output format) and what
a Gemini line may not. Pure; raised as Reject(field, message) like every rule in rules.py,
which holds the rest. The reference parser applies these; the fast parser asks them.
"""

from __future__ import annotations

from typing import Final

from bananabatch.core.catalog import ModelSpec, Provider, openai_size
from bananabatch.core.intake.rules import URGENT, ModelRules
from bananabatch.core.intake.text import Reject, show

OPENAI_FIELDS: Final = ("quality", "output_format")


def is_openai(rules: ModelRules) -> bool:
    return rules.spec.provider is Provider.OPENAI


def check_openai_fields(
    rules: ModelRules,
    aspect: str | None,
    size: str | None,
    quality: str | None,
    output_format: str | None,
    priority: object = None,
) -> tuple[str | None, str | None, str | None]:
    """A simple line's size, quality and output format as sent, defaults filled in, after
    aspect_ratio and image_size passed their checks: a gpt-image line always has all
    three (its size from its aspect ratio when it wrote none); a Gemini line has its size
    as written and may write neither of the others."""
    spec = rules.spec
    if spec.provider is not Provider.OPENAI:
        for field, value in (("quality", quality), ("output_format", output_format)):
            if value is not None:
                raise Reject(
                    field,
                    f"{spec.model_id} takes no {field}; only gpt-image models do; "
                    f"found {show(value)}",
                )
        return size, None, None
    if priority == URGENT:
        raise Reject(
            "priority",
            f"expected normal or bulk for {spec.model_id}: the urgent lane is Gemini's "
            f"synchronous API; found {show(priority)}",
        )
    if size is not None and aspect is not None and spec.size_by_ratio.get(aspect) != size:
        raise Reject(
            "image_size",
            f"aspect_ratio {aspect} is {spec.size_by_ratio.get(aspect)} on {spec.model_id}; "
            f"expected that size or no image_size; found {show(size)}",
        )
    _check_choice(spec, "quality", quality, spec.qualities)
    _check_choice(spec, "output_format", output_format, spec.output_formats)
    return (
        openai_size(spec, aspect, size),
        quality or spec.default_quality,
        output_format or spec.default_output_format,
    )


def _check_choice(spec: ModelSpec, field: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise Reject(
            field, f"expected one of {', '.join(allowed)} for {spec.model_id}; found {show(value)}"
        )


def check_native_model(rules: ModelRules) -> None:
    """The native form carries a Gemini GenerateContentRequest: no other provider's."""
    if is_openai(rules):
        raise Reject(
            "model",
            f"{rules.spec.model_id} is an OpenAI model and takes simple lines only; the "
            'native form ("request") is a Gemini request',
        )
