"""Every resource the pipeline needs exists, with the settings that make it safe and cheap."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pulumi
import pytest

import bananabatch.config as cfg
from bananabatch.core.ttl import TTL_FIELD
from tests.infra import harness, spec
from tests.infra.checks import BUCKET, SECRET, TOPIC, Recorded, check_secret_values_hidden


def _bucket(name: str, bucket: str) -> Recorded:
    found = [b for b in spec.deployed(name).of_type(BUCKET) if b.inputs["name"] == bucket]
    assert len(found) == 1
    return found[0]


def _rules(bucket: Recorded) -> list[tuple[str, Any, Any]]:
    return [
        (r["action"]["type"], r["condition"].get("age"), r["condition"].get("matchesSuffixes"))
        for r in bucket.inputs.get("lifecycleRules", [])
    ]


def test_required_apis_are_enabled_and_left_enabled_on_destroy() -> None:
    services = spec.deployed("vertex").of_type("gcp:projects/service:Service")
    names = {s.inputs["service"] for s in services}
    assert {
        f"{api}.googleapis.com"
        for api in (
            "cloudfunctions",
            "run",
            "cloudbuild",
            "artifactregistry",
            "eventarc",
            "pubsub",
            "storage",
            "firestore",
            "cloudscheduler",
            "secretmanager",
            "logging",
            "aiplatform",
        )
    } <= names
    assert all(s.inputs["disableOnDestroy"] is False for s in services)
    gemini = {
        s.inputs["service"] for s in spec.deployed("gemini").of_type("gcp:projects/service:Service")
    }
    assert "aiplatform.googleapis.com" not in gemini


def test_inbox_uploads_expire_after_the_configured_age() -> None:
    args = spec.scenario("gemini")
    rules = _rules(_bucket("gemini", args.inbox_bucket))
    assert ("Delete", args.inbox_retention_days, None) in rules


def test_request_files_and_reports_expire_but_images_are_kept_by_default() -> None:
    args = spec.scenario("gemini")
    rules = _rules(_bucket("gemini", args.results_bucket))
    assert ("Delete", args.report_retention_days, [".jsonl", ".json"]) in rules
    assert [r for r in rules if r[0] == "Delete" and r[2] is None] == []


def test_result_retention_and_versioning_are_optional_on_results() -> None:
    args = spec.scenario("gemini-budgets")
    bucket = _bucket("gemini-budgets", args.results_bucket)
    assert ("Delete", 180, None) in _rules(bucket)
    assert bucket.inputs["versioning"] == {"enabled": True}
    noncurrent = [
        r for r in bucket.inputs["lifecycleRules"] if r["condition"].get("withState") == "ARCHIVED"
    ]
    assert len(noncurrent) == 1
    plain = _bucket("gemini", spec.scenario("gemini").results_bucket)
    assert plain.inputs["versioning"] == {"enabled": False}


def test_buckets_live_where_configured_and_keep_data_on_destroy_by_default() -> None:
    for bucket in spec.deployed("vertex").of_type(BUCKET):
        assert bucket.inputs["location"] == "US"
        assert bucket.inputs["forceDestroy"] is False


def test_firestore_native_database_with_the_indexes_the_queries_need() -> None:
    dep = spec.deployed("gemini")
    [db] = dep.of_type("gcp:firestore/database:Database")
    assert db.inputs["type"] == "FIRESTORE_NATIVE"
    assert db.inputs["name"] == cfg.Settings().firestore_database
    indexes = {
        (i.inputs["collection"], tuple(f["fieldPath"] for f in i.inputs["fields"]))
        for i in dep.of_type("gcp:firestore/index:Index")
    }
    assert {
        ("batches", ("job_id", "state")),
        ("batches", ("state", "created_at")),
        ("batches", ("job_id", "created_at")),
        ("batches", ("job_id", "state", "created_at")),
    } == indexes
    fields = {
        (f.inputs["collection"], f.inputs["field"]): f
        for f in dep.of_type("gcp:firestore/field:Field")
    }
    scopes = {i["queryScope"] for i in fields[("items", "state")].inputs["indexConfig"]["indexes"]}
    assert scopes == {"COLLECTION", "COLLECTION_GROUP"}


def test_ttl_expires_cache_entries_only_when_images_expire() -> None:
    # The webhook receiver keeps no replay records any more (it reads and writes no state),
    # so the cache (when images expire) and the in-flight claims (always) are the
    # collections with an expiry, on the field core/ttl.py names.
    def ttl(name: str) -> set[tuple[str, str]]:
        return {
            (f.inputs["collection"], f.inputs["field"])
            for f in spec.deployed(name).of_type("gcp:firestore/field:Field")
            if "ttlConfig" in f.inputs
        }

    assert ttl("gemini") == {("inflight", TTL_FIELD)}
    assert ttl("gemini-budgets") == {("cache", TTL_FIELD), ("inflight", TTL_FIELD)}


def test_firestore_has_delete_protection_and_point_in_time_recovery_by_default() -> None:
    [db] = spec.deployed("gemini").of_type("gcp:firestore/database:Database")
    assert db.inputs["deleteProtectionState"] == "DELETE_PROTECTION_ENABLED"
    assert db.inputs["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_ENABLED"
    # Destroying the stack leaves the database (and its history) in place.
    assert db.inputs["deletionPolicy"] == "ABANDON"


def test_firestore_protection_and_pitr_follow_the_stack_config() -> None:
    args = replace(spec.scenario("gemini"), firestore_delete_protection=False, firestore_pitr=False)
    [db] = harness.deploy(args).of_type("gcp:firestore/database:Database")
    assert db.inputs["deleteProtectionState"] == "DELETE_PROTECTION_DISABLED"
    assert db.inputs["pointInTimeRecoveryEnablement"] == "POINT_IN_TIME_RECOVERY_DISABLED"


@pytest.mark.parametrize(
    ("database", "release"),
    [
        ("(default)", "cloud.firestore"),
        ("bb-db", "cloud.firestore/bb-db"),
    ],
)
def test_deny_all_security_rules_are_released_on_the_database(database: str, release: str) -> None:
    args = replace(spec.scenario("gemini"), firestore_database=database)
    dep = harness.deploy(args)
    [ruleset] = dep.of_type("gcp:firebaserules/ruleset:Ruleset")
    [released] = dep.of_type("gcp:firebaserules/release:Release")
    [source] = ruleset.inputs["source"]["files"]
    text = " ".join(source["content"].split())
    # Every path, every operation, refused to every client SDK caller.
    assert "match /{document=**} { allow read, write: if false; }" in text
    assert "allow" not in text.replace("allow read, write: if false;", "")
    assert released.inputs["name"] == release
    assert released.inputs["rulesetName"] == ruleset.id


def test_topics_for_uploads_tick_batch_done_completions_and_dead_letters() -> None:
    args = spec.scenario("gemini")
    names = {t.inputs["name"] for t in spec.deployed("gemini").of_type(TOPIC)}
    assert names == {
        args.topic_name(t) for t in ("uploads", "tick", "batch-done", "completions", "dead-letter")
    }


def test_secrets_exist_only_for_what_the_configuration_uses() -> None:
    def ids(name: str) -> set[str]:
        return {s.inputs["secretId"] for s in spec.deployed(name).of_type(SECRET)}

    assert ids("gemini") == {"bananabatch-gemini-api-key"}
    assert ids("gemini-static") == {
        "bananabatch-gemini-api-key",
        "bananabatch-webhook-signing-secret",
    }
    assert ids("gemini-dynamic") == {"bananabatch-gemini-api-key"}
    assert ids("gemini-openai") == {
        "bananabatch-gemini-api-key",
        "bananabatch-openai-api-key",
        "bananabatch-openai-webhook-secret",
    }
    assert ids("vertex") == set()


def test_secret_values_are_secret_outputs_and_appear_nowhere_in_plain_text() -> None:
    # The scenarios pass plain strings: the program must mark them secret itself.
    problems = check_secret_values_hidden(
        spec.deployed("gemini-static"), [spec.GEMINI_KEY, spec.SIGNING_SECRET]
    )
    assert problems == []
    openai = [spec.GEMINI_KEY, spec.OPENAI_KEY, spec.OPENAI_WEBHOOK_SECRET]
    assert check_secret_values_hidden(spec.deployed("gemini-openai"), openai) == []


def test_tick_message_is_json_with_a_source_attribute() -> None:
    [job] = spec.deployed("gemini").of_type("gcp:cloudscheduler/job:Job")
    target = job.inputs["pubsubTarget"]
    assert json.loads(base64.b64decode(target["data"])) == {"kind": "tick"}
    assert target["attributes"] == {"source": "cloud-scheduler"}


def test_stack_outputs_are_ready_to_paste() -> None:
    args = spec.scenario("gemini")
    out = spec.deployed("gemini").outputs
    completions = f"projects/{args.project}/topics/{args.topic_name('completions')}"
    assert out["inboxBucket"] == args.inbox_bucket
    assert out["resultsBucket"] == args.results_bucket
    assert out["completionsTopic"] == completions
    assert out["uploadCommand"] == f"gcloud storage cp prompts.jsonl gs://{args.inbox_bucket}/"
    assert out["subscribeCommand"].startswith("gcloud pubsub subscriptions create ")
    assert f"--topic={completions}" in out["subscribeCommand"]
    status = out["statusCommand"]
    for name, value in (
        (cfg.ENV_BACKEND, "gcp"),
        (cfg.ENV_PROJECT, args.project),
        (cfg.ENV_INBOX_BUCKET, args.inbox_bucket),
        (cfg.ENV_RESULTS_BUCKET, args.results_bucket),
        (cfg.ENV_FIRESTORE_DATABASE, args.firestore_database),
    ):
        assert f"{name}='{value}'" in status
    assert status.endswith("bananabatch status")


def test_a_secret_passed_in_as_a_secret_output_stays_secret() -> None:
    args = spec.scenario("gemini")
    dep = harness.deploy(replace(args, gemini_api_key=pulumi.Output.secret("AIza-from-config")))
    assert check_secret_values_hidden(dep, ["AIza-from-config"]) == []
