"""The billing kill switch: a Cloud Billing budget on this project whose threshold
notifications go to a topic, and a function on that topic that pauses all submission.

Built only when `bananabatch:billingAccountId` is set (creating a budget needs Billing
Account Costs Manager on that account, which a project owner may not have). The function,
`on_billing_alert`, uses the same pause as a "credits depleted" answer from Gemini
(functions/bananabatch/pipeline/pause.py): items stay queued, jobs show why, one alert goes
to the completions topic, and `bananabatch resume` lifts it.

Kept apart from pipeline.py on purpose: it is optional, and its IAM is its own (the
function's identity may only use Firestore and publish alerts; Cloud Billing's own
identity may only publish to this topic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pulumi
import pulumi_gcp as gcp

from bananabatch.pipeline.pause import BILLING_KILL_THRESHOLD, BILLING_THRESHOLDS

if TYPE_CHECKING:
    from bananabatch_infra.pipeline import FunctionSpec, Pipeline

BILLING_API: Final = "billingbudgets.googleapis.com"
# Cloud Billing publishes budget notifications as this identity.
BUDGET_PUBLISHER: Final = "serviceAccount:billing-budget-alert@system.gserviceaccount.com"
BUDGET_SCHEMA_VERSION: Final = "1.0"


@dataclass(frozen=True)
class KillSwitch:
    topic: gcp.pubsub.Topic
    budget: gcp.billing.Budget
    function: gcp.cloudfunctionsv2.Function
    subscription: gcp.pubsub.Subscription


def build(
    pipeline: Pipeline,
    spec: FunctionSpec,
    *,
    project_number: pulumi.Output[str],
    token_creator: pulumi.Resource,
    build_grants: list[pulumi.Resource],
) -> KillSwitch | None:
    """The budget, its topic and the pausing function; None when no billing account is set."""
    a = pipeline._args
    if a.billing_account_id is None:
        return None
    name = pipeline._name
    api = gcp.projects.Service(
        f"{name}-api-billingbudgets",
        project=a.project,
        service=BILLING_API,
        disable_on_destroy=False,
        disable_dependent_services=False,
        opts=pulumi.ResourceOptions(parent=pipeline),
    )
    topic = pipeline._topic("billing-alerts")
    publisher = pipeline._topic_role(
        "billing-budget-publisher", topic, "roles/pubsub.publisher", BUDGET_PUBLISHER
    )
    amount = a.billing_budget_amount_usd
    budget = gcp.billing.Budget(
        f"{name}-billing-budget",
        billing_account=a.billing_account_id,
        display_name=f"{a.name_prefix} kill switch"[:60],
        budget_filter=gcp.billing.BudgetBudgetFilterArgs(
            projects=[project_number.apply(lambda n: f"projects/{n}")],
            calendar_period="MONTH",
        ),
        amount=gcp.billing.BudgetAmountArgs(
            specified_amount=gcp.billing.BudgetAmountSpecifiedAmountArgs(
                currency_code="USD",
                units=str(int(amount)),
                nanos=round((amount - int(amount)) * 1e9),
            )
        ),
        # Below the kill threshold a notification only alerts; at it, submission pauses.
        threshold_rules=[
            gcp.billing.BudgetThresholdRuleArgs(threshold_percent=t, spend_basis="CURRENT_SPEND")
            for t in BILLING_THRESHOLDS
        ],
        all_updates_rule=gcp.billing.BudgetAllUpdatesRuleArgs(
            pubsub_topic=topic.id,
            schema_version=BUDGET_SCHEMA_VERSION,
        ),
        opts=pipeline._opts(api, publisher),
    )

    account = pipeline._account(spec.account_id(a.name_prefix), f"bananabatch {spec.entry_point}")
    pipeline.accounts[spec.key] = account
    member = pipeline._member_of(account)
    grants = [
        # Firestore has no narrower grant; the pause is a document.
        pipeline._project_role(spec.key, "roles/datastore.user", member),
        # The one alert goes to the completions topic.
        pipeline._topic_role(
            f"{spec.key}-completions", pipeline.completions_topic, "roles/pubsub.publisher", member
        ),
    ]
    function = pipeline._function(spec, grants + build_grants)
    invoker = pipeline._run_invoker(spec.key, function, pipeline._member_of(pipeline.invoker))
    subscription = pipeline._push_subscription(
        "billing-alerts",
        topic,
        function,
        invoker,
        # Budget notifications repeat several times a day: an old one is worth nothing.
        retention="3600s",
        min_backoff="10s",
        max_backoff="300s",
        max_attempts=10,
        extra_deps=[token_creator],
    )
    gcp.pubsub.SubscriptionIAMMember(
        f"{name}-pubsub-agent-billing-alerts-subscriber",
        project=a.project,
        subscription=subscription.name,
        role="roles/pubsub.subscriber",
        member=pipeline._pubsub_agent_member,
        opts=pipeline._opts(),
    )
    pulumi.log.info(
        f"billing kill switch: submission pauses when this project's spend reaches "
        f"{BILLING_KILL_THRESHOLD:.0%} of ${amount:.2f} a month (billing account "
        f"{a.billing_account_id})"
    )
    return KillSwitch(topic=topic, budget=budget, function=function, subscription=subscription)
