"""The base of every model in the config tree: unknown keys are errors, field docstrings are the reference docs."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class ConfigModel(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` are valid YAML floats but no setting means them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads YAML `true` as 1 for an int or float field: `sequence_len: true` was a 1-token sequence.
        if isinstance(value, bool) and info.field_name and _number_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is a yes/no value; give a number")
        return value


def _number_only(annotation: Any) -> bool:
    """Whether a field takes numbers (int, float, optionally None) but no bool."""
    kinds = set(typing.get_args(annotation)) - {type(None)} if typing.get_args(annotation) else {annotation}
    return bool(kinds) and kinds <= {int, float}
