"""Form values checked before anything is sent: an out-of-range value is refused with one line naming the
field and its allowed range, never changed. The ranges are read from the API's own parameter models."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel


class FormError(ValueError):
    """A value the user typed that cannot be sent; its message is shown as is."""


def bounds(model: type[BaseModel], field: str) -> tuple[float | None, float | None]:
    """(minimum, maximum) of a numeric field of an API parameter model (None where unbounded)."""
    lo = hi = None
    for m in model.model_fields[field].metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
        if getattr(m, "gt", None) is not None:
            lo = m.gt
        if getattr(m, "lt", None) is not None:
            hi = m.lt
    return lo, hi


def whole(value: Any, label: str, model: type[BaseModel] | None = None, field: str | None = None,
          lo: float | None = None, hi: float | None = None) -> int:
    """`value` as an int within the field's range, or FormError naming `label` and the range."""
    if model is not None and field is not None:
        lo, hi = bounds(model, field)
    if value is None or value == "":
        raise FormError(f"{label}: enter a whole number.")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise FormError(f"{label}: {value!r} is not a number.") from None
    if not math.isfinite(x) or x != int(x):
        raise FormError(f"{label}: {value:g} is not a whole number.")
    n = int(x)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        span = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else
                f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise FormError(f"{label} must be {span}; got {n}. Nothing was launched.")
    return n
