"""Pulumi entry point: read the stack configuration, build the pipeline, export its outputs."""

from __future__ import annotations

import pulumi

from bananabatch_infra.pipeline import Pipeline
from bananabatch_infra.stack_config import NAMESPACE, load_args

args = load_args(pulumi.Config(NAMESPACE), pulumi.Config("gcp"))
pipeline = Pipeline("bananabatch", args)
for key, value in pipeline.outputs.items():
    pulumi.export(key, value)
