"""The job API's request and response bodies, and the grammar of what clients send."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from landfall.api.errors import invalid, shown
from landfall.contracts import validate_partition
from landfall.errors import InvalidEventError

__all__ = [
    "DATASET_NAME",
    "ID_CHARS",
    "MAX_OFFSET",
    "MODEL_VERSION_PATTERN",
    "PARTITION_CHARS",
    "PARTITION_PATTERN",
    "PredictAccepted",
    "PredictRequest",
    "checked_partition",
    "is_partition",
]

# The event contract's grammar for dataset names (landfall/contracts.py).
_DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
DATASET_NAME = re.compile(_DATASET_PATTERN)
# ASCII digits only: a regex's \d would also take other scripts' digits.
PARTITION_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2})?$"
PARTITION_CHARS = len("YYYY-MM-DDTHH")
# A registered model version: the registry numbers them.
MODEL_VERSION_PATTERN = r"^[0-9]{1,18}$"
# A lake-relative directory: no control characters (a NUL makes every file call fail).
_LAKE_PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_LAKE_PATH_CHARS = 1024
# Ids are uuids and hashes; anything much longer is not one of ours.
ID_CHARS = 128
# Paging deeper than this is a mistake (or a probe); the database's integers end anyway.
MAX_OFFSET = 1_000_000_000


def is_partition(value: str) -> bool:
    """Whether ``value`` is a real date (or hour) partition: YYYY-MM-DD or YYYY-MM-DDTHH."""
    # The cheap ASCII shape first: only a short string of digits reaches the calendar.
    if re.fullmatch(PARTITION_PATTERN, value) is None:
        return False
    try:
        validate_partition(value)
    except InvalidEventError:
        return False
    return True


def checked_partition(value: str | None, location: tuple[str, str]) -> str | None:
    """``value`` if it is a partition (or None); else a 422 at ``location``."""
    if value is not None and not is_partition(value):
        raise invalid(
            location, f"{location[1]}: {shown(value, 20)} is not a date YYYY-MM-DD or YYYY-MM-DDTHH"
        )
    return value


class PredictRequest(BaseModel):
    """A batch to score: a landed partition of a configured dataset."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        min_length=1, max_length=128, pattern=_DATASET_PATTERN, description="a configured dataset"
    )
    # The pattern is declared for clients; the validator checks it, and the calendar,
    # with a message that names the format.
    partition: str = Field(
        max_length=PARTITION_CHARS,
        description="the partition: YYYY-MM-DD or YYYY-MM-DDTHH",
        json_schema_extra={"pattern": PARTITION_PATTERN},
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=_LAKE_PATH_CHARS,
        pattern=_LAKE_PATH_PATTERN,
        description="lake-relative directory of the raw files, if not the default",
    )
    format: Literal["csv", "parquet", "json"] | None = Field(
        default=None, description="raw file format, if not the dataset's"
    )
    model_version: str | None = Field(
        default=None,
        max_length=18,
        pattern=MODEL_VERSION_PATTERN,
        description="a registered model version to pin, instead of the dataset's alias",
    )

    @field_validator("partition")
    @classmethod
    def _a_partition(cls, value: str) -> str:
        if not is_partition(value):
            raise ValueError(f"{value} is not a date YYYY-MM-DD or YYYY-MM-DDTHH")
        return value


class PredictAccepted(BaseModel):
    """A submitted run: poll ``links.self`` for its progress."""

    job_id: str = Field(description="the run id; GET /batch/{job_id} follows it")
    batch_id: str
    run_id: str
    dataset: str
    partition: str
    status: str
    links: dict[str, str]
