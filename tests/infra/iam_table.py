"""Every IAM binding the Pulumi program makes, with the code path that needs it.

    .venv/bin/python -m tests.infra.iam_table            # every scenario of tests/infra/spec.py
    .venv/bin/python -m tests.infra.iam_table gemini     # one

The program runs under the same offline mocks as the infra tests. A binding that
`spec.explained_grants` does not explain is printed as UNEXPLAINED (and fails
tests/infra/test_iam.py). BANANABATCH_INFRA_ROOT=<another checkout> prints that checkout's
program instead (its infra/ comes first on the import path), to compare before and after.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

_OTHER = os.environ.get("BANANABATCH_INFRA_ROOT")
if _OTHER:
    sys.path.insert(0, str(Path(_OTHER) / "infra"))
else:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))

from tests.infra import harness, spec  # noqa: E402  (needs infra/ on the path)
from tests.infra.checks import Deployment, Grant, iam_grants  # noqa: E402

UNEXPLAINED = "UNEXPLAINED"


@dataclass(frozen=True)
class Row:
    member: str
    role: str
    scope: str
    condition: str | None
    code: str
    why: str


def _short_member(member: str) -> str:
    kind, _, who = member.partition(":")
    if kind == "serviceAccount":
        name, _, domain = who.partition("@")
        if domain.startswith(("gcp-sa-", "gs-project-accounts")):
            return f"{domain.split('.')[0]} agent"
        return name
    return member


def rows(dep: Deployment, explained: dict[Grant, spec.Need]) -> list[Row]:
    grants, problems = iam_grants(dep)
    out = [Row("?", "?", "?", None, UNEXPLAINED, p) for p in problems]
    for grant in sorted(grants, key=lambda g: (g.member, g.role, g.scope)):
        need = explained.get(grant)
        out.append(
            Row(
                _short_member(grant.member),
                grant.role.removeprefix("roles/"),
                grant.scope,
                grant.condition,
                need.code if need else UNEXPLAINED,
                need.why if need else "no code path explains this binding",
            )
        )
    return out


def render(name: str, table: list[Row]) -> str:
    lines = [
        f"### {name}: {len(table)} bindings",
        "",
        "| identity | role | on | needed by | why |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in table:
        on = r.scope + (" (conditioned)" if r.condition else "")
        lines.append(f"| {r.member} | {r.role} | {on} | `{r.code}` | {r.why} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    harness.install_mocks()
    names = argv or list(spec.IAM_SCENARIOS)
    unexplained = 0
    for name in names:
        args = spec.scenario(name)
        table = rows(harness.deploy(args), spec.explained_grants(args))
        unexplained += sum(r.code == UNEXPLAINED for r in table)
        print(render(name, table))
        print()
    print(f"unexplained bindings: {unexplained}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
