"""The parameter distributions of a sweep file (``parameters.<key path>``), validated by pydantic: uniform,
log-uniform, int, categorical, grid and constant values. :mod:`fmx.schema` builds the sweep file from them and
re-exports them; :mod:`fmx.search` turns them into Ray Tune / Optuna search spaces."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):  # YAML reads yes/true as True, which pydantic would take for 1
        raise ValueError(f"Input should be a valid integer, not a boolean ({v})")
    return v


# A whole number (2 and 2.0), never a boolean
StrictInt = Annotated[int, BeforeValidator(_no_bool)]


class _Strict(BaseModel):
    # hide_input_in_errors: a library caller's ValidationError would print the raw value (keys in an s3:// URI);
    # parse_sweep still reads it from errors() and masks it
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# ---------------------------------------------------------------------------------------- distributions
class Uniform(_Strict):
    """Real value uniform in [min, max]."""

    distribution: Literal["uniform"]
    min: float
    max: float

    @model_validator(mode="after")
    def _bounds(self):
        if not (math.isfinite(self.min) and math.isfinite(self.max)) or self.min >= self.max:
            raise ValueError(f"min must be < max and both finite (min={self.min}, max={self.max})")
        return self


class LogUniform(Uniform):
    """Real value log-uniform in [min, max], min > 0 (weights and learning rates)."""

    distribution: Literal["log_uniform"]  # type: ignore[assignment]

    @model_validator(mode="after")
    def _positive(self):
        if self.min <= 0:
            raise ValueError(f"log_uniform needs min > 0 (min={self.min})")
        return self


class IntRange(_Strict):
    """Integer uniform in [min, max] with an optional step."""

    distribution: Literal["int"]
    min: StrictInt
    max: StrictInt
    step: StrictInt = 1

    @model_validator(mode="after")
    def _bounds(self):
        if self.min >= self.max or self.step < 1:
            raise ValueError(f"int needs min < max and step >= 1 (min={self.min}, max={self.max}, step={self.step})")
        if self.min < -2**63 or self.max >= 2**63 - 1:  # Tune draws with numpy's int64 randint (max + 1 too)
            raise ValueError(f"int bounds must lie within -2**63 .. 2**63 - 2 (min={self.min}, max={self.max})")
        return self

    @property
    def top(self) -> int:
        """The largest value a trial can draw: ``max`` itself only when it lies on the ``min + k * step`` grid
        (min 16, max 50, step 16 draws 16, 32, 48)."""
        return self.min + (self.max - self.min) // self.step * self.step


def _distinct_values(values: list) -> list:
    """Refuse a value given twice (a grid would run its trials twice, a categorical sample it twice as often) and
    NaN (a trial would train with it)."""
    seen = set()
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("nan is not a value a trial can use; give numbers")
        key = (type(v).__name__, v)  # 1, 1.0 and true are different values in a config
        if key in seen:
            raise ValueError(f"{v!r} is listed twice; list each value once")
        seen.add(key)
    return values


class Categorical(_Strict):
    """One of a list of values (numbers, strings, booleans)."""

    distribution: Literal["categorical"]
    values: list[Union[bool, int, float, str]] = Field(min_length=1)

    _distinct = field_validator("values")(_distinct_values)


class Grid(_Strict):
    """Every value is tried (Tune grid search); each grid multiplies the trial count."""

    distribution: Literal["grid"]
    values: list[Union[bool, int, float, str]] = Field(min_length=1)

    _distinct = field_validator("values")(_distinct_values)


class Constant(_Strict):
    """A fixed value for every trial (same as a base override, kept for W&B-style files)."""

    value: Union[bool, int, float, str]

    @field_validator("value")
    @classmethod
    def _not_nan(cls, v):
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("nan is not a value a trial can use; give a number")
        return v


Distribution = Annotated[Union[Uniform, LogUniform, IntRange, Categorical, Grid], Field(discriminator="distribution")]
NUMERIC = (Uniform, LogUniform, IntRange)
