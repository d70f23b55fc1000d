"""Stack configuration → PipelineArgs: defaults, typing, and refusing unusable combinations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

import bananabatch.config as cfg
from bananabatch_infra.stack_config import (
    KNOWN_KEYS,
    SECRET_KEYS,
    InfraConfigError,
    PipelineArgs,
    load_args,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "Pulumi.example.yaml"


class FakeConfig:
    """Stands in for pulumi.Config: plain values by key, secrets wrapped as secret outputs."""

    def __init__(self, values: dict[str, str], secrets: dict[str, str] | None = None) -> None:
        self.values = values
        self.secrets = secrets or {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def get_secret(self, key: str) -> pulumi.Output[Any] | None:
        value = self.secrets.get(key)
        return None if value is None else pulumi.Output.secret(value)


def load(values: dict[str, str], secrets: dict[str, str] | None = None, **gcp: str) -> PipelineArgs:
    return load_args(FakeConfig(values, secrets), FakeConfig({"project": "p-1", **gcp}))


def test_defaults_follow_the_application_settings() -> None:
    args = load({}, {"geminiApiKey": "k"})
    defaults = cfg.Settings()
    assert args.project == "p-1"
    assert args.region == "us-central1"
    assert args.provider is cfg.ProviderKind.GEMINI
    assert args.default_model == cfg.DEFAULT_MODEL
    assert args.max_active_batches == defaults.max_active_batches
    assert args.max_attempts == defaults.max_attempts
    assert args.stuck_after_hours == defaults.stuck_after_hours
    assert args.firestore_database == defaults.firestore_database
    assert args.webhook_mode is cfg.WebhookMode.OFF
    assert args.job_budget_usd is None
    assert args.result_retention_days is None
    assert args.firestore_delete_protection is True
    assert args.firestore_pitr is True


def test_firestore_delete_protection_and_pitr_can_be_switched_off() -> None:
    args = load(
        {"firestoreDeleteProtection": "false", "firestorePitr": "false"}, {"geminiApiKey": "k"}
    )
    assert args.firestore_delete_protection is False
    assert args.firestore_pitr is False


def test_values_are_parsed_into_their_types() -> None:
    args = load(
        {
            "provider": "VERTEX",
            "bucketLocation": "eu",
            "jobBudgetUsd": "12.5",
            "maxActiveBatches": "7",
            "resultsVersioning": "true",
            "resultRetentionDays": "90",
            "tickSchedule": "*/5 * * * *",
        },
        region="europe-west4",
    )
    assert args.provider is cfg.ProviderKind.VERTEX
    assert args.buckets_location == "EU"
    assert args.trigger_region == "eu"
    assert args.job_budget_usd == 12.5
    assert args.max_active_batches == 7
    assert args.results_versioning is True
    assert args.result_retention_days == 90
    assert args.tick_schedule == "*/5 * * * *"
    assert args.database_location == "europe-west4"


def test_bucket_names_default_to_globally_unique_project_scoped_names() -> None:
    args = load({"namePrefix": "bb2"}, {"geminiApiKey": "k"})
    assert args.inbox_bucket == "p-1-bb2-inbox"
    assert args.results_bucket == "p-1-bb2-results"
    assert args.topic_name("tick") == "bb2-tick"


@pytest.mark.parametrize(
    ("values", "secrets", "gcp", "fragment"),
    [
        ({}, {}, {"project": ""}, "gcp:project"),
        ({}, {}, {}, "geminiApiKey"),
        ({"provider": "openai"}, {}, {}, "provider must be one of"),
        ({"webhookMode": "sometimes"}, {"geminiApiKey": "k"}, {}, "webhookMode must be one of"),
        ({"webhookMode": "static"}, {"geminiApiKey": "k"}, {}, "webhookSigningSecret"),
        ({"provider": "vertex", "webhookMode": "dynamic"}, {}, {}, "Vertex has no batch webhooks"),
        ({"maxAttempts": "three"}, {"geminiApiKey": "k"}, {}, "must be an integer"),
        ({"jobBudgetUsd": "-1"}, {"geminiApiKey": "k"}, {}, "jobBudgetUsd must be >= 0"),
        (
            {"reportRetentionDays": "1"},
            {"geminiApiKey": "k"},
            {},
            "reportRetentionDays must be >= 3",
        ),
        ({"tickSchedule": "every minute"}, {"geminiApiKey": "k"}, {}, "cron"),
        ({"namePrefix": "This-Is-Far-Too-Long-A-Prefix"}, {"geminiApiKey": "k"}, {}, "namePrefix"),
        ({"resultsVersioning": "maybe"}, {"geminiApiKey": "k"}, {}, "true or false"),
        ({"firestorePitr": "on"}, {"geminiApiKey": "k"}, {}, "firestorePitr"),
        ({"openaiEnabled": "true"}, {"geminiApiKey": "k"}, {}, "bananabatch:openaiApiKey"),
        ({"openaiEnabled": "yes please"}, {"geminiApiKey": "k"}, {}, "true or false"),
        ({"referenceLocations": "gs://assets"}, {"geminiApiKey": "k"}, {}, "referenceLocations"),
        (
            {"referenceLocations": "gs://assets/refs/, s3://x/"},
            {"geminiApiKey": "k"},
            {},
            "referenceLocations: expected a gs:// or https:// prefix",
        ),
    ],
)
def test_unusable_configuration_is_refused_with_the_key_to_fix(
    values: dict[str, str], secrets: dict[str, str], gcp: dict[str, str], fragment: str
) -> None:
    with pytest.raises(InfraConfigError, match=fragment):
        load(values, secrets, **gcp)


def test_secrets_are_read_as_secret_outputs_not_plain_values() -> None:
    args = load({"webhookMode": "static"}, {"geminiApiKey": "k", "webhookSigningSecret": "whsec_x"})
    assert isinstance(args.gemini_api_key, pulumi.Output)
    assert isinstance(args.webhook_signing_secret, pulumi.Output)


def test_example_stack_file_uses_only_known_keys_and_loads() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    config = document["config"]
    ours = {k.split(":", 1)[1] for k in config if k.startswith("bananabatch:")}
    assert ours <= KNOWN_KEYS, ours - KNOWN_KEYS
    gcp = {k.split(":", 1)[1]: str(v) for k, v in config.items() if k.startswith("gcp:")}
    values = {k: str(config[f"bananabatch:{k}"]) for k in ours}
    args = load_args(FakeConfig(values, dict.fromkeys(SECRET_KEYS, "s")), FakeConfig(gcp))
    assert args.project == "my-project-id"
    assert args.default_model == cfg.DEFAULT_MODEL


KEY = {"geminiApiKey": "k"}


def test_a_stack_without_a_daily_budget_gets_the_default_and_only_unlimited_removes_it() -> None:
    assert load({}, KEY).daily_budget_usd == cfg.DEFAULT_DAILY_BUDGET_USD
    assert load({"dailyBudgetUsd": "unlimited"}, KEY).daily_budget_usd is None
    assert load({"dailyBudgetUsd": "Unlimited"}, KEY).daily_budget_usd is None
    assert load({"dailyBudgetUsd": "40"}, KEY).daily_budget_usd == 40.0
    with pytest.raises(InfraConfigError, match="must be a number"):
        load({"dailyBudgetUsd": "none"}, KEY)
    with pytest.raises(InfraConfigError, match="must be a number"):
        load({"billingBudgetUsd": "unlimited"}, KEY)


def test_the_billing_kill_switch_settings_are_read() -> None:
    args = load({"billingAccountId": "01AB23-45CD67-89EF01", "billingBudgetUsd": "250"}, KEY)
    assert args.billing_account_id == "01AB23-45CD67-89EF01"
    assert args.billing_budget_amount_usd == 250.0


def test_reference_locations_are_read_as_the_application_takes_them() -> None:
    args = load({"referenceLocations": "gs://assets/refs/,https://"}, {"geminiApiKey": "k"})
    assert args.reference_locations == "gs://assets/refs/,https://"
    assert cfg.Settings.from_env(
        {cfg.ENV_REFERENCE_LOCATIONS: args.reference_locations}
    ).reference_locations == ("gs://assets/refs/", "https://")
    assert load({}, {"geminiApiKey": "k"}).reference_locations is None


def test_the_openai_provider_is_off_unless_enabled_and_its_secrets_are_secret_outputs() -> None:
    assert load({}, KEY).openai_enabled is False
    args = load(
        {"openaiEnabled": "true"},
        {"geminiApiKey": "k", "openaiApiKey": "sk-x", "openaiWebhookSecret": "whsec_y"},
    )
    assert args.openai_enabled
    assert args.openai_webhook_on
    assert args.webhook_on  # the receiver is deployed for OpenAI's deliveries
    assert isinstance(args.openai_api_key, pulumi.Output)
    assert isinstance(args.openai_webhook_secret, pulumi.Output)
