"""Field types both families' wire models share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator


def _to_utc(value: datetime) -> datetime:
    """An instant in UTC (a time without a zone is UTC). One that is no longer a date in UTC
    (9999-12-31T23:59:59-12:00 is in year 10000) is refused here, not when it is stored."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("the time must fall within the years 1 to 9999 in UTC") from None


# A turn's time (family X `date`, family M `ts`): ISO-8601, held in UTC.
Instant = Annotated[datetime, AfterValidator(_to_utc)]
