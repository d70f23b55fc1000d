"""The project's Files API store (issue 13 part 7).

The Developer API keeps every uploaded request file for 48 h and every batch's result file
for as long as it likes, in a store of 20 GB per project; result files cannot be deleted
(their 36-character ids fail the delete's validation, reference §7). So:

- the request file a batch was made from is deleted as soon as the batch is collected
  (`release_request_file`): it has done its work, and deleting it frees its bytes now
  rather than 48 h later;
- the bytes left in the store are measured on every tick and logged as one structured
  record, `{"message": "files store usage", "files_store_bytes": N}`; past
  `BANANABATCH_FILES_STORE_WARN_BYTES` (default half the limit) the record is a WARNING
  carrying `"alert": "files_store_high"`, which the deployment's log-based alert matches.

Both are best effort: a failure is logged and never stops a collection or a tick.
"""

from __future__ import annotations

from typing import Final

from bananabatch.config import (
    FILES_STORE_ALERT,
    FILES_STORE_BYTES_FIELD,
    FILES_STORE_LIMIT_BYTES,
    FILES_STORE_USAGE_MESSAGE,
)
from bananabatch.errors import PermanentError, TransientError
from bananabatch.log import get_logger
from bananabatch.pipeline.runtime import Runtime
from bananabatch.ports import BatchProvider, ProviderBatch

log = get_logger(__name__)

USAGE_MESSAGE: Final = FILES_STORE_USAGE_MESSAGE
ALERT: Final = FILES_STORE_ALERT


def release_request_file(
    rt: Runtime, seen: ProviderBatch, provider: BatchProvider | None = None
) -> None:
    """Delete the uploaded request file of a finished batch, if its provider (default:
    Gemini's) keeps one."""
    try:
        (provider or rt.provider).release_input(seen)
    except (TransientError, PermanentError) as exc:
        # It expires on its own 48 h after the upload; the store measure shows the cost.
        log.warning(
            "could not delete the batch's request file; it expires by itself",
            extra={"input_file": seen.input_file, "error": str(exc)},
        )


def report_usage(rt: Runtime) -> int | None:
    """Log the bytes the project's Files store holds; None when the provider has no such
    store (Vertex) or could not say."""
    try:
        used = rt.provider.files_store_bytes()
    except (TransientError, PermanentError) as exc:
        log.warning("could not measure the files store", extra={"error": str(exc)})
        return None
    if used is None:
        return None
    threshold = rt.settings.files_store_warn_bytes
    fields: dict[str, object] = {
        FILES_STORE_BYTES_FIELD: used,
        "files_store_warn_bytes": threshold,
        "files_store_limit_bytes": FILES_STORE_LIMIT_BYTES,
    }
    if used > threshold:
        log.warning(USAGE_MESSAGE, extra={**fields, "alert": ALERT})
    else:
        log.info(USAGE_MESSAGE, extra=fields)
    return used
