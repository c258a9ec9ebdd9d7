"""A parameter check several native defences share; :mod:`shieldkit.validation` holds the general ones."""

from __future__ import annotations

from shieldkit.errors import InvalidParameterError
from shieldkit.validation import check_int


def check_int_between(owner: str, name: str, value: object, low: int, high: int) -> int:
    """An integer parameter in ``[low, high]``, or an error naming it."""
    check_int(owner, name, value, minimum=low)
    if value > high:
        raise InvalidParameterError(f"{owner}: {name} must be between {low} and {high}, got {name}={value!r}")
    return value
