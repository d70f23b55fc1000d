"""The identity Cloud Build deploys as: a dedicated service account with listed roles.

`pulumi up` creates buckets, topics, functions, service accounts and the IAM bindings
between them, so the deployer cannot be weak; it need not be Owner either. Each role below
is the narrowest predefined role that manages a kind of resource the program creates
(tests/infra/test_deployer.py checks every resource type maps to one), and project IAM is
granted under a condition that lets the deployer grant only the project-level roles the
program itself grants: it cannot make anyone (itself included) Owner or Editor.

The roles are granted once, by a project owner, with the commands `bootstrap_commands`
prints (also in DEPLOY.md, which a test keeps equal to this list).
"""

from __future__ import annotations

import shlex
from typing import Final

DEPLOYER_ACCOUNT_ID: Final = "bananabatch-deployer"

# role -> what the deployer does with it
DEPLOYER_ROLES: Final = {
    "roles/serviceusage.serviceUsageAdmin": "enable the APIs; create service identities",
    "roles/storage.admin": "buckets, their lifecycle and IAM; the function source object",
    "roles/pubsub.admin": "topics, subscriptions and their IAM",
    "roles/datastore.owner": "the Firestore database, its indexes and TTL fields",
    "roles/firebaserules.admin": "Firestore security rules (ruleset and release)",
    "roles/secretmanager.admin": "secrets, their versions and IAM; the build's own secrets",
    "roles/iam.serviceAccountAdmin": "the functions' service accounts and IAM on them",
    "roles/iam.serviceAccountUser": "deploy functions and triggers that run as those accounts",
    "roles/cloudfunctions.developer": "the functions",
    "roles/run.admin": "run.invoker on the functions' Cloud Run services",
    "roles/artifactregistry.admin": "the image repository and its IAM",
    "roles/cloudscheduler.admin": "the tick job",
    "roles/monitoring.editor": "alert policies, notification channels, the dashboard",
    "roles/logging.configWriter": "log-based metrics",
    "roles/logging.logWriter": "the build's own logs (a user-specified build account)",
    # Conditioned: see PROJECT_IAM_CONDITION.
    "roles/resourcemanager.projectIamAdmin": "project-level grants the program makes",
}

# Pulumi resource type prefix -> the role above (or on the billing account) that manages it.
RESOURCE_ROLES: Final = {
    "gcp:projects/service:": "roles/serviceusage.serviceUsageAdmin",
    "gcp:projects/serviceIdentity:": "roles/serviceusage.serviceUsageAdmin",
    "gcp:projects/iAMMember:": "roles/resourcemanager.projectIamAdmin",
    "gcp:storage/": "roles/storage.admin",
    "gcp:pubsub/": "roles/pubsub.admin",
    "gcp:firestore/": "roles/datastore.owner",
    "gcp:firebaserules/": "roles/firebaserules.admin",
    "gcp:secretmanager/": "roles/secretmanager.admin",
    "gcp:serviceaccount/": "roles/iam.serviceAccountAdmin",
    "gcp:cloudfunctionsv2/": "roles/cloudfunctions.developer",
    "gcp:cloudrunv2/": "roles/run.admin",
    "gcp:artifactregistry/": "roles/artifactregistry.admin",
    "gcp:cloudscheduler/": "roles/cloudscheduler.admin",
    "gcp:monitoring/": "roles/monitoring.editor",
    "gcp:logging/metric:": "roles/logging.configWriter",
    "gcp:billing/budget:": "roles/billing.costsManager",
}

# Granted on the billing account (not the project) when the stack names one: the Cloud
# Billing budget that feeds the kill switch lives there.
BILLING_ACCOUNT_ROLES: Final = {
    "roles/billing.costsManager": "the budget and its threshold notifications",
}

# Roles the program grants at project level (tests/infra/test_iam.py lists why each cannot be
# narrower); the deployer may grant these and no other.
PROJECT_ROLES_GRANTED: Final = (
    "roles/aiplatform.user",
    "roles/datastore.user",
    "roles/logging.logWriter",
    "roles/storage.objectViewer",
)


def project_iam_condition() -> str:
    roles = ", ".join(f'"{r}"' for r in PROJECT_ROLES_GRANTED)
    return f'api.getAttribute("iam.googleapis.com/modifiedGrantsByRole", []).hasOnly([{roles}])'


def bootstrap_commands(project: str = "$PROJECT") -> list[str]:
    """The gcloud commands a project owner runs once to create the deployer."""
    email = f"{DEPLOYER_ACCOUNT_ID}@{project}.iam.gserviceaccount.com"
    commands = [
        f"gcloud iam service-accounts create {DEPLOYER_ACCOUNT_ID} --project={project} "
        "--display-name='bananabatch deploys (Cloud Build)'"
    ]
    for role in DEPLOYER_ROLES:
        command = (
            f"gcloud projects add-iam-policy-binding {project} "
            f"--member=serviceAccount:{email} --role={role}"
        )
        if role == "roles/resourcemanager.projectIamAdmin":
            # ^;^ makes `;` gcloud's list delimiter: the expression holds commas.
            condition = (
                f"^;^title=grant-only-bananabatch-roles;expression={project_iam_condition()}"
            )
            command += f" --condition={shlex.quote(condition)}"
        else:
            command += " --condition=None"
        commands.append(command)
    return commands


if __name__ == "__main__":
    print("\n".join(bootstrap_commands()))
