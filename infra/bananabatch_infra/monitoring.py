"""Monitoring as code: log-based metrics, alert policies, a dashboard and where alerts go.

Every alert a deployment comes with is in `alert_specs` (the README lists them from the same
table). Two kinds:
- metric policies: the dead-letter backlog, the oldest unacked message of each push
  subscription, function errors and refused webhook deliveries (both from log-based
  metrics over the functions' structured logs);
- log-match policies: one log record is the incident (a batch past the watchdog, the Files
  store past its threshold, a deployment-wide pause, any other record carrying `alert`).

Log filters name fields and messages the functions write; `LOG_LITERALS` lists each text a
filter depends on so a test can check it still appears in the code (a renamed log message
would otherwise silence its alert without a trace).

Notifications go to the e-mail channel from `bananabatch:alertEmail`; without it the
policies still open incidents in the console, and `pulumi up` says where alerts go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pulumi
import pulumi_gcp as gcp

import bananabatch.config as cfg

if TYPE_CHECKING:
    from bananabatch_infra.pipeline import Pipeline

# Log texts and field values the filters below depend on, with the module that writes them.
LOG_LITERALS: Final = {
    "batch stuck past the watchdog limit": "functions/bananabatch/pipeline/tick.py",
    "submission paused for the whole deployment": "functions/bananabatch/pipeline/pause.py",
    "webhook_refused": "functions/bananabatch/entrypoints.py",
    cfg.FILES_STORE_ALERT: "functions/bananabatch/config.py",
    cfg.JOB_OVERDUE_ALERT: "functions/bananabatch/config.py",
    cfg.FILES_STORE_USAGE_MESSAGE: "functions/bananabatch/config.py",
}
# Log-match incidents notify at most this often each (Cloud Monitoring requires a limit).
NOTIFY_EVERY: Final = "3600s"
AUTO_CLOSE: Final = "86400s"
# Thresholds: counts per 10-minute window, ages in seconds.
ERRORS_PER_WINDOW: Final = 5
REFUSED_PER_WINDOW: Final = 20
WINDOW: Final = "600s"
# Longer than a batch-done message's whole retry schedule takes to start failing over to
# the dead-letter queue (backoff up to 600 s), far shorter than the 7-day retention.
OLDEST_UNACKED_SECONDS: Final = 3600


@dataclass(frozen=True)
class AlertSpec:
    key: str
    display_name: str
    documentation: str
    # exactly one of these two
    metric_filter: str | None = None
    threshold: float = 0
    aligner: str = "ALIGN_MAX"
    log_filter: str | None = None
    duration: str = "0s"


@dataclass(frozen=True)
class Monitoring:
    channels: list[pulumi.Output[str]]
    metrics: dict[str, gcp.logging.Metric]
    policies: dict[str, gcp.monitoring.AlertPolicy]
    dashboard: gcp.monitoring.Dashboard


def _services_filter(pipeline: Pipeline) -> str:
    prefix = pipeline._args.name_prefix
    return f'resource.type="cloud_run_revision" AND resource.labels.service_name=~"^{prefix}-on-"'


def metric_specs(pipeline: Pipeline) -> dict[str, tuple[str, str, str]]:
    """short name -> (metric name, log filter, description)."""
    a = pipeline._args
    ours = _services_filter(pipeline)
    specs = {
        "function-errors": (
            f"{a.name_prefix}-function-errors",
            f"{ours} AND severity>=ERROR",
            "ERROR and worse log records of the bananabatch functions, by service",
        ),
        "files-store-bytes": (
            f"{a.name_prefix}-files-store-bytes",
            f'{ours} AND jsonPayload.message="{cfg.FILES_STORE_USAGE_MESSAGE}"',
            "Bytes the deployment's batches leave in the Gemini Files store",
        ),
    }
    if a.webhook_on:
        specs["webhook-refused"] = (
            f"{a.name_prefix}-webhook-refused",
            f'{ours} AND jsonPayload.alert="webhook_refused"',
            "Webhook deliveries the receiver refused (bad signature, size, scheme)",
        )
    return specs


def alert_specs(pipeline: Pipeline) -> list[AlertSpec]:
    a = pipeline._args
    ours = _services_filter(pipeline)
    metrics = metric_specs(pipeline)
    subscription = 'resource.type="pubsub_subscription"'
    specs = [
        AlertSpec(
            "dead-letter-backlog",
            "bananabatch: messages in the dead-letter queue",
            "A message failed delivery too many times and was set aside. Read it with "
            "`gcloud pubsub subscriptions pull` on the deadLetterSubscription output; a batch "
            "is signalled again by the next tick, an upload needs re-uploading.",
            metric_filter=(
                'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" '
                f'AND {subscription} AND resource.label.subscription_id="'
                f'{a.topic_name("dead-letter-keep")}"'
            ),
            threshold=0,
        ),
        AlertSpec(
            "oldest-unacked",
            "bananabatch: a delivery has waited over an hour",
            "A push subscription holds a message no function has acknowledged for an hour: "
            "a function keeps failing or cannot scale. See the function's logs.",
            metric_filter=(
                'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age" '
                f"AND {subscription} AND resource.label.subscription_id="
                f'monitoring.regex.full_match("{a.name_prefix}-.*-push")'
            ),
            threshold=OLDEST_UNACKED_SECONDS,
        ),
        AlertSpec(
            "function-errors",
            "bananabatch: functions logging errors",
            f"More than {ERRORS_PER_WINDOW} ERROR records in 10 minutes from the bananabatch "
            "functions (log-based metric). Permanent failures are recorded and acknowledged; "
            "a burst means something systematic.",
            metric_filter=(
                f'metric.type="logging.googleapis.com/user/{metrics["function-errors"][0]}" '
                'AND resource.type="cloud_run_revision"'
            ),
            threshold=ERRORS_PER_WINDOW,
            aligner="ALIGN_SUM",
        ),
        AlertSpec(
            "batch-overdue",
            "bananabatch: a batch ran past the watchdog",
            "A provider batch ran longer than stuckAfterHours and was cancelled; its rows "
            "without an outcome go to the retry path. Repeats mean the provider is stalling.",
            log_filter=f'{ours} AND jsonPayload.message:"batch stuck past the watchdog limit"',
        ),
        AlertSpec(
            "job-overdue",
            "bananabatch: a job ran past its expected completion",
            "A job is still RUNNING past BANANABATCH_JOB_OVERDUE_HOURS (default twice the "
            "watchdog). The record carries the job id, its age, its counts and any pause; "
            "`bananabatch status JOB` shows where it waits.",
            log_filter=f'{ours} AND jsonPayload.alert="{cfg.JOB_OVERDUE_ALERT}"',
        ),
        AlertSpec(
            "files-store-high",
            "bananabatch: Gemini Files storage past its threshold",
            "Result files the service keeps count toward the project's 20 GB Files store and "
            "cannot be deleted; new batches fail once it is full. Slow down or wait for them "
            "to expire.",
            log_filter=f'{ours} AND jsonPayload.alert="{cfg.FILES_STORE_ALERT}"',
        ),
        AlertSpec(
            "deployment-paused",
            "bananabatch: submission paused",
            "Submission is paused for the whole deployment (credits depleted, spend window, "
            "refused key, billing budget); items stay queued. `bananabatch status` says why; "
            "`bananabatch resume` lifts it once the cause is fixed.",
            log_filter=(
                f'{ours} AND jsonPayload.message="submission paused for the whole deployment"'
            ),
        ),
        AlertSpec(
            "alert-record",
            "bananabatch: an alert from the pipeline",
            "A function logged a record carrying `alert` (for example a model gone, an unknown "
            "429 repeating). The record's `alert` and `reason` fields say what.",
            log_filter=(
                f"{ours} AND jsonPayload.alert:* "
                f'AND NOT jsonPayload.alert="{cfg.FILES_STORE_ALERT}" '
                f'AND NOT jsonPayload.alert="{cfg.JOB_OVERDUE_ALERT}" '
                'AND NOT jsonPayload.alert="webhook_refused"'
            ),
        ),
    ]
    if a.webhook_on:
        specs.append(
            AlertSpec(
                "webhook-refused",
                "bananabatch: webhook deliveries refused",
                f"More than {REFUSED_PER_WINDOW} refused webhook deliveries in 10 minutes: "
                "someone is probing the public endpoint, or the signing key or audience "
                "changed. Refusals cost nothing but an invocation each.",
                metric_filter=(
                    f'metric.type="logging.googleapis.com/user/{metrics["webhook-refused"][0]}" '
                    'AND resource.type="cloud_run_revision"'
                ),
                threshold=REFUSED_PER_WINDOW,
                aligner="ALIGN_SUM",
            )
        )
    return specs


def build(pipeline: Pipeline) -> Monitoring:
    a = pipeline._args
    name = pipeline._name
    channels: list[pulumi.Output[str]] = []
    if a.alert_email is not None:
        channel = gcp.monitoring.NotificationChannel(
            f"{name}-alert-email",
            project=a.project,
            display_name=f"{a.name_prefix} alerts",
            type="email",
            labels={"email_address": a.alert_email},
            opts=pipeline._opts(),
        )
        channels.append(channel.name)

    metrics = {
        short: _metric(pipeline, short, metric_name, log_filter, description)
        for short, (metric_name, log_filter, description) in metric_specs(pipeline).items()
    }
    policies = {
        spec.key: _policy(pipeline, spec, channels, metrics) for spec in alert_specs(pipeline)
    }
    dashboard = gcp.monitoring.Dashboard(
        f"{name}-dashboard",
        project=a.project,
        dashboard_json=pulumi.Output.all(*[m.name for m in metrics.values()]).apply(
            lambda _: json.dumps(dashboard_document(pipeline))
        ),
        opts=pipeline._opts(*metrics.values()),
    )
    return Monitoring(channels=channels, metrics=metrics, policies=policies, dashboard=dashboard)


def _metric(
    pipeline: Pipeline, short: str, metric_name: str, log_filter: str, description: str
) -> gcp.logging.Metric:
    a = pipeline._args
    resource_name = f"{pipeline._name}-metric-{short}"
    shape: dict[str, Any]
    if short == "files-store-bytes":
        # The reported size as a distribution; its max over a window is the current size.
        shape = {
            "metric_descriptor": gcp.logging.MetricMetricDescriptorArgs(
                metric_kind="DELTA", value_type="DISTRIBUTION", unit="By"
            ),
            "value_extractor": f"EXTRACT(jsonPayload.{cfg.FILES_STORE_BYTES_FIELD})",
            "bucket_options": gcp.logging.MetricBucketOptionsArgs(
                exponential_buckets=gcp.logging.MetricBucketOptionsExponentialBucketsArgs(
                    num_finite_buckets=40, growth_factor=2, scale=1_000_000
                )
            ),
        }
    else:
        shape = {
            "metric_descriptor": gcp.logging.MetricMetricDescriptorArgs(
                metric_kind="DELTA",
                value_type="INT64",
                unit="1",
                labels=[
                    gcp.logging.MetricMetricDescriptorLabelArgs(
                        key="service", value_type="STRING", description="Cloud Run service"
                    )
                ],
            ),
            "label_extractors": {"service": "EXTRACT(resource.labels.service_name)"},
        }
    return gcp.logging.Metric(
        resource_name,
        project=a.project,
        name=metric_name,
        filter=log_filter,
        description=description,
        opts=pipeline._opts(),
        **shape,
    )


def _policy(
    pipeline: Pipeline,
    spec: AlertSpec,
    channels: list[pulumi.Output[str]],
    metrics: dict[str, gcp.logging.Metric],
) -> gcp.monitoring.AlertPolicy:
    a = pipeline._args
    documentation = gcp.monitoring.AlertPolicyDocumentationArgs(
        content=spec.documentation, mime_type="text/markdown"
    )
    if spec.log_filter is not None:
        condition = gcp.monitoring.AlertPolicyConditionArgs(
            display_name=spec.display_name,
            condition_matched_log=gcp.monitoring.AlertPolicyConditionConditionMatchedLogArgs(
                filter=spec.log_filter
            ),
        )
        strategy = gcp.monitoring.AlertPolicyAlertStrategyArgs(
            notification_rate_limit=gcp.monitoring.AlertPolicyAlertStrategyNotificationRateLimitArgs(
                period=NOTIFY_EVERY
            ),
            auto_close=AUTO_CLOSE,
        )
    else:
        condition = gcp.monitoring.AlertPolicyConditionArgs(
            display_name=spec.display_name,
            condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                filter=spec.metric_filter,
                comparison="COMPARISON_GT",
                threshold_value=spec.threshold,
                duration=spec.duration,
                aggregations=[
                    gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period=WINDOW, per_series_aligner=spec.aligner
                    )
                ],
            ),
        )
        strategy = gcp.monitoring.AlertPolicyAlertStrategyArgs(auto_close=AUTO_CLOSE)
    return gcp.monitoring.AlertPolicy(
        f"{pipeline._name}-alert-{spec.key}",
        project=a.project,
        display_name=spec.display_name,
        combiner="OR",
        conditions=[condition],
        documentation=documentation,
        notification_channels=channels,
        alert_strategy=strategy,
        user_labels={"app": "bananabatch"},
        # A user metric must exist before a policy can name it.
        opts=pipeline._opts(*metrics.values()),
    )


def dashboard_document(pipeline: Pipeline) -> dict[str, object]:
    """The dashboard's JSON: one chart per signal the alerts watch, plus requests."""
    a = pipeline._args
    metrics = metric_specs(pipeline)
    charts: list[tuple[str, str, str]] = [
        (
            "Function errors (log records)",
            f'metric.type="logging.googleapis.com/user/{metrics["function-errors"][0]}"',
            "ALIGN_SUM",
        ),
        (
            "Function requests",
            'metric.type="run.googleapis.com/request_count" AND resource.type='
            f'"cloud_run_revision" AND resource.label.service_name=monitoring.regex.full_match'
            f'("{a.name_prefix}-on-.*")',
            "ALIGN_RATE",
        ),
        (
            "Dead-letter backlog",
            'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" AND '
            f'resource.label.subscription_id="{a.topic_name("dead-letter-keep")}"',
            "ALIGN_MAX",
        ),
        (
            "Oldest unacked delivery (s)",
            'metric.type="pubsub.googleapis.com/subscription/oldest_unacked_message_age" AND '
            f'resource.label.subscription_id=monitoring.regex.full_match("{a.name_prefix}-.*-push")',
            "ALIGN_MAX",
        ),
        (
            "Gemini Files store (bytes)",
            f'metric.type="logging.googleapis.com/user/{metrics["files-store-bytes"][0]}"',
            "ALIGN_DELTA",
        ),
    ]
    if "webhook-refused" in metrics:
        charts.append(
            (
                "Refused webhook deliveries",
                f'metric.type="logging.googleapis.com/user/{metrics["webhook-refused"][0]}"',
                "ALIGN_SUM",
            )
        )
    tiles = []
    for index, (title, metric_filter, aligner) in enumerate(charts):
        tiles.append(
            {
                "xPos": (index % 2) * 6,
                "yPos": (index // 2) * 4,
                "width": 6,
                "height": 4,
                "widget": {
                    "title": title,
                    "xyChart": {
                        "dataSets": [
                            {
                                "timeSeriesQuery": {
                                    "timeSeriesFilter": {
                                        "filter": metric_filter,
                                        "aggregation": {
                                            "alignmentPeriod": "300s",
                                            "perSeriesAligner": aligner,
                                        },
                                    }
                                },
                                "plotType": "LINE",
                            }
                        ]
                    },
                },
            }
        )
    return {
        "displayName": f"bananabatch ({a.name_prefix})",
        "mosaicLayout": {"columns": 12, "tiles": tiles},
        "labels": {"app": ""},
    }
