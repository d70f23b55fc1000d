"""Time-to-live fields of state documents.

A document may carry `expire_at`: the time after which the store may delete it (Firestore's
TTL policy, which infra sets on the collections that use it). Through the StateStore port
it is an aware ISO 8601 string, like every time the pipeline writes; each store keeps it in
its own timestamp form (a Firestore timestamp: a TTL policy ignores a field of any other
type, so a string would never expire anything). A value that is not an aware time is
refused by every store, rather than stored as an expiry that never fires.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from bananabatch.errors import PermanentError

TTL_FIELD: Final = "expire_at"
TTL_FIELDS: Final = frozenset({TTL_FIELD})


def ttl_instant(value: Any, name: str, path: str) -> datetime | None:
    """The UTC instant a TTL field names (None stays None: no expiry)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is not None:
            return stamp.astimezone(UTC)
    raise PermanentError(
        f"document {path}: TTL field {name!r} expects an ISO 8601 time with a zone; found {value!r}"
    )
