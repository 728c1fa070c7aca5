"""Parameter types shared by the topology generators (validated by pydantic at the call)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from commsim.units import Bandwidth, Duration

PositiveInt = Annotated[int, Field(gt=0)]
Ratio = Annotated[float, Field(ge=1.0)]
PositiveBandwidth = Annotated[Bandwidth, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]
GENERATOR_CALL = {"validate_return": False, "config": {"arbitrary_types_allowed": True}}
"""``validate_call`` options of every generator: units parsed on the way in, the Topology returned as built."""
