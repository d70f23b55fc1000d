"""infra/__main__.py: stack config in, the whole pipeline and its stack outputs out."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.infra import harness
from tests.infra.checks import FUNCTION, check_secret_values_hidden

MAIN = Path(__file__).resolve().parents[2] / "infra" / "__main__.py"
STACK_CONFIG = {
    "gcp:project": harness.PROJECT,
    "gcp:region": "europe-west1",
    "bananabatch:webhookMode": "dynamic",
    "bananabatch:jobBudgetUsd": "15",
    "bananabatch:geminiApiKey": "AIza-from-stack-config",
}


@pytest.fixture
def stack_config() -> Iterator[None]:
    pulumi.runtime.set_all_config(dict(STACK_CONFIG), secret_keys=["bananabatch:geminiApiKey"])
    yield
    pulumi.runtime.set_all_config({}, secret_keys=[])


def test_main_builds_the_configured_pipeline_and_exports_its_outputs(
    stack_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.__setitem__(key, value))
    harness.MOCKS.reset()
    resolved: dict[str, Any] = {}

    def program() -> pulumi.Output[None]:
        runpy.run_path(str(MAIN), run_name="__main__")
        outputs = {k: pulumi.Output.from_input(v) for k, v in exported.items()}
        return pulumi.Output.all(**outputs).apply(resolved.update)

    harness.run_program(program)
    resources = list(harness.MOCKS.resources)
    functions = {r.inputs["name"]: r for r in resources if r.typ == FUNCTION}
    assert set(functions) == {
        "bananabatch-on-upload",
        "bananabatch-on-tick",
        "bananabatch-on-batch-done",
        "bananabatch-on-gemini-webhook",
    }
    assert {f.inputs["location"] for f in functions.values()} == {"europe-west1"}
    assert set(resolved) == {
        "inboxBucket",
        "resultsBucket",
        "completionsTopic",
        "deadLetterSubscription",
        "uploadCommand",
        "subscribeCommand",
        "statusCommand",
        "webhookUrl",
        "dailyBudget",
        "billingKillSwitch",
        "alerts",
    }
    assert resolved["inboxBucket"] == f"{harness.PROJECT}-bananabatch-inbox"
    from tests.infra.checks import Deployment

    dep = Deployment(resources=tuple(resources), outputs=resolved)
    assert check_secret_values_hidden(dep, ["AIza-from-stack-config"]) == []
