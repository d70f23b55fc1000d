"""Pulumi mocks that record every resource, and `deploy()` that runs the program once.

The mocks fake only what GCP would compute (ids, emails, URLs), in GCP's real formats,
because ids feed other resources. An invoke the program was not expected to make fails
the test instead of returning an empty answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pulumi

from bananabatch_infra import FUNCTIONS_DIR
from bananabatch_infra.pipeline import Pipeline
from bananabatch_infra.stack_config import PipelineArgs
from tests.infra.checks import Deployment, Recorded

PROJECT: Final = "bb-test-project"
PROJECT_NUMBER: Final = "123456789012"
STORAGE_AGENT: Final = f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
PUBSUB_AGENT: Final = f"service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
VERTEX_AGENT: Final = f"service-{PROJECT_NUMBER}@gcp-sa-aiplatform.iam.gserviceaccount.com"
_AGENTS: Final = {"pubsub.googleapis.com": PUBSUB_AGENT, "aiplatform.googleapis.com": VERTEX_AGENT}


class UnexpectedInvoke(AssertionError):
    """The program called a provider function the mocks do not know."""


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.resources: list[Recorded] = []
        self.invokes: list[str] = []

    def reset(self) -> None:
        with self._lock:
            self.resources = []
            self.invokes = []

    def new_resource(
        self, args: pulumi.runtime.MockResourceArgs
    ) -> tuple[str | None, dict[Any, Any]]:
        inputs = dict(args.inputs)
        rid, state = _fake(args.typ, args.name, inputs)
        with self._lock:
            self.resources.append(Recorded(args.typ, args.name, inputs, rid, state))
        return rid, state

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        with self._lock:
            self.invokes.append(args.token)
        if args.token == "gcp:organizations/getProject:getProject":
            project = args.args.get("projectId")
            return {"number": PROJECT_NUMBER, "projectId": project, "name": project}, []
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {
                "emailAddress": STORAGE_AGENT,
                "member": f"serviceAccount:{STORAGE_AGENT}",
                "project": args.args.get("project"),
            }, []
        # Unknown tokens must fail loudly: a mock answering them would let a misspelt
        # invoke pass with None values (reference pulumi-gcp.md, fact 4).
        raise UnexpectedInvoke(f"the program made an unexpected invoke: {args.token}")


def _fake(typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A realistic id and state for a new resource (mocks compute nothing themselves)."""
    project = inputs.get("project") or PROJECT
    state = dict(inputs)
    fake = _FAKES.get(typ)
    if fake is None:
        return f"{name}-id", state
    return fake(name, inputs, project, state), state


# Each fills in the state the provider would compute and returns the resource id.
_Fake = Callable[[str, dict[str, Any], str, dict[str, Any]], str]


def _account(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
    path = f"projects/{project}/serviceAccounts/{email}"
    state.update(email=email, member=f"serviceAccount:{email}", name=path)
    return path


def _bucket(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    state["url"] = f"gs://{inputs['name']}"
    return str(inputs["name"])


def _secret(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    state["name"] = f"projects/{PROJECT_NUMBER}/secrets/{inputs['secretId']}"
    return f"projects/{project}/secrets/{inputs['secretId']}"


def _secret_version(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    state.update(version="1", name=f"{inputs['secret']}/versions/1")
    return f"{inputs['secret']}/versions/1"


def _function(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    fn, region = inputs["name"], inputs["location"]
    state["url"] = f"https://{region}-{project}.cloudfunctions.net/{fn}"
    state["serviceConfig"] = {
        **inputs.get("serviceConfig", {}),
        "uri": f"https://{fn}-x7k2p9q4ra-uc.a.run.app",
        "service": f"projects/{project}/locations/{region}/services/{fn}",
    }
    return f"projects/{project}/locations/{region}/functions/{fn}"


def _service_identity(
    name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]
) -> str:
    email = _AGENTS[inputs["service"]]
    state.update(email=email, member=f"serviceAccount:{email}")
    return f"projects/{project}/services/{inputs['service']}"


def _repository(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
    state["name"] = inputs["repositoryId"]
    return (
        f"projects/{project}/locations/{inputs['location']}/repositories/{inputs['repositoryId']}"
    )


def _named(path: Callable[[str, str], str]) -> _Fake:
    """A resource whose computed `name` is also its id."""

    def fake(name: str, inputs: dict[str, Any], project: str, state: dict[str, Any]) -> str:
        state["name"] = path(project, name)
        return str(state["name"])

    return fake


_FAKES: dict[str, _Fake] = {
    "gcp:serviceaccount/account:Account": _account,
    "gcp:pubsub/topic:Topic": lambda _n, i, p, _s: f"projects/{p}/topics/{i['name']}",
    "gcp:pubsub/subscription:Subscription": (
        lambda _n, i, p, _s: f"projects/{p}/subscriptions/{i['name']}"
    ),
    "gcp:storage/bucket:Bucket": _bucket,
    "gcp:secretmanager/secret:Secret": _secret,
    "gcp:secretmanager/secretVersion:SecretVersion": _secret_version,
    "gcp:cloudfunctionsv2/function:Function": _function,
    "gcp:projects/serviceIdentity:ServiceIdentity": _service_identity,
    "gcp:artifactregistry/repository:Repository": _repository,
    "gcp:firestore/database:Database": lambda _n, i, p, _s: f"projects/{p}/databases/{i['name']}",
    "gcp:firebaserules/ruleset:Ruleset": _named(lambda p, n: f"projects/{p}/rulesets/{n}-0f1e2d3c"),
    "gcp:monitoring/notificationChannel:NotificationChannel": _named(
        lambda p, _n: f"projects/{p}/notificationChannels/4711"
    ),
    "gcp:logging/metric:Metric": lambda _n, i, _p, _s: str(i["name"]),
    "gcp:monitoring/alertPolicy:AlertPolicy": _named(
        lambda p, n: f"projects/{p}/alertPolicies/{abs(hash(n)) % 10**8}"
    ),
    "gcp:cloudscheduler/job:Job": (
        lambda _n, i, p, _s: f"projects/{p}/locations/{i['region']}/jobs/{i['name']}"
    ),
}


MOCKS: Final = RecordingMocks()


def install_mocks() -> None:
    # preview=False: in preview, computed values are unknown and apply() callbacks never run.
    pulumi.runtime.set_mocks(MOCKS, project="bananabatch", stack="test", preview=False)


def run_program(program: Callable[[], Any]) -> None:
    """Run `program` under the mocks and wait for every registration and output it started.

    pulumi.runtime.test does the waiting; without it apply() callbacks never run and checks
    on their results pass vacuously.
    """
    decorate: Callable[[Callable[[], Any]], Callable[[], None]] = pulumi.runtime.test
    decorate(program)()


def deploy(args: PipelineArgs, *, source_root: Path = FUNCTIONS_DIR) -> Deployment:
    """Run the Pipeline component with `args` and return every resource it registered."""
    MOCKS.reset()
    captured: dict[str, Any] = {}

    def program() -> pulumi.Output[None]:
        pipeline = Pipeline("bb", args, source_root=source_root)
        captured["archive"] = pipeline.archive
        outputs = {k: pulumi.Output.from_input(v) for k, v in pipeline.outputs.items()}
        return pulumi.Output.all(**outputs).apply(lambda values: captured.update(outputs=values))

    run_program(program)
    return Deployment(
        resources=tuple(MOCKS.resources),
        outputs=dict(captured["outputs"]),
        archive_files=captured["archive"].files,
        archive_object=captured["archive"].object_name,
    )
