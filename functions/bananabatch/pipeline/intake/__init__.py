"""Upload handling: one JSONL object in the inbox becomes one job.

The whole input is streamed once: each line is validated, placed in a batch by the
planner and written straight into that batch's staged request file, so memory does not
grow with the file. Nothing here spends money; submission starts only after the job has
moved to RUNNING, which is why a crash anywhere in intake can simply be redone.

A batch-lane line gets no item record here: a million document writes do not fit in one
invocation (nor under Firestore's 500/50/5 ramp-up rule). Its batch's manifest
(core/manifest.py), written next to the request file, holds what the record needs; the
records are created per batch when it is submitted (pipeline/materialize.py), so
the writes spread over the job's life at the pace of max_active_batches. Urgent lines,
cache hits and in-file duplicates, which are served apart from batches, still get their
records here, in batches of writes. Intake takes no in-flight claim: a batch's requests are
claimed when it is submitted (pipeline/claims.py), so the writes again follow the pace of
submission rather than the size of the file.

The modules, by concern:
- job: creating the job and admitting it against the budget;
- read: the read loop (chunks, dedup, placement; the per-line work);
- publish: the staged files and batch records;
- served: urgent lines, cache hits and in-file repeats, which get item records here.
(In-flight requests of other jobs are not intake's: pipeline/claims.py at submission.)
What a staged line is (request template, manifest line, prices) is core/staging.py.
"""

from bananabatch.pipeline.intake.job import handle_upload, source_bucket

__all__ = ["handle_upload", "source_bucket"]
