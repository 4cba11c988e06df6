"""Strict number types shared by the contract's models.

Input numbers are strict: JSON numbers only. ``true`` or ``"7"`` are refused (lax pydantic would
read them as 1 and 7), while a JSON integer stays a valid float (``"tempo": 120``). JSON can
carry NaN/Infinity through Python's json module; scores and features never may.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

from .constants import MAX_TIME_S

FiniteFloat = Annotated[float, Strict(), Field(allow_inf_nan=False)]
NonNegFinite = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Ratio = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Seconds = Annotated[
    float,
    Strict(),
    Field(ge=0, le=MAX_TIME_S, allow_inf_nan=False, description="Seconds, 0..604800 (7 days)"),
]
# Output scores are built by the server itself (lax: numpy floats are fine there).
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
