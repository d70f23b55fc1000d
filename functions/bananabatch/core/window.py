"""The batch window (issue 21 point 4): when a deployment submits its non-urgent batches.

Pure. A window is a five-field cron expression read in a time zone ("0 2 * * *" in
"Europe/Paris": every night at 02:00 Paris time, daylight saving included); the next
window after a moment is croniter's answer, not a parser of ours. A job admitted while a
window is configured keeps its batches queued until the next window after its admission
(pipeline/window.py); urgent lines never wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CRON_FIELDS = 5


@dataclass(frozen=True)
class BatchWindow:
    cron: str
    time_zone: str = "UTC"

    @classmethod
    def parse(cls, cron: str, time_zone: str = "UTC") -> BatchWindow:
        """The window, or ValueError saying what is wrong with it."""
        # Imported here: config.py reads this module, and the Pulumi program imports config
        # with only pulumi and pydantic installed.
        from croniter import croniter

        cron = " ".join(cron.split())
        if len(cron.split()) != CRON_FIELDS or not croniter.is_valid(cron):
            raise ValueError(
                f"batch window {cron!r}: expected a five-field cron expression "
                '(minute hour day-of-month month day-of-week), e.g. "0 2 * * *"'
            )
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"batch window time zone {time_zone!r}: expected an IANA time zone such as "
                "Europe/Paris or UTC"
            ) from None
        return cls(cron, time_zone)

    def next_after(self, now: datetime) -> datetime:
        """The first window strictly after `now` (aware), in UTC."""
        from croniter import croniter

        local = now.astimezone(ZoneInfo(self.time_zone))
        found: datetime = croniter(self.cron, local).get_next(datetime)
        return found.astimezone(UTC)

    def describe(self) -> str:
        return f'"{self.cron}" ({self.time_zone})'

    def local(self, moment: datetime) -> str:
        """A moment as the window's time zone shows it."""
        return moment.astimezone(ZoneInfo(self.time_zone)).strftime("%Y-%m-%d %H:%M %Z")


def waiting_text(window: BatchWindow, at: datetime, now: datetime) -> str:
    """What `status` says about a job whose batches wait for the window at `at`."""
    left = max(0, int((at - now).total_seconds()))
    hours, rest = divmod(left, 3600)
    span = f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
    return (
        f"waiting for the batch window {window.describe()}: its batches go at "
        f"{window.local(at)} ({at.isoformat()}), in {span}; urgent lines did not wait"
    )
