"""What a service started by ``landfall up`` is handed: its settings file and environment.

The stack's settings (the file and ``LANDFALL_*`` overrides it loaded, plus its own
choices: the broker's address, the API's port) reach each service in one file, so every
service runs on exactly what the stack decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from landfall.config import ENV_PREFIX, REVEAL_SECRETS, Settings
from landfall.config_sources import is_other_variable
from landfall.redact import write_private

__all__ = ["child_environment", "write_child_settings"]


def write_child_settings(settings: Settings, config_file: Path) -> None:
    """Write the settings the stack's services load, secrets in clear: this user only."""
    write_private(
        config_file, yaml.safe_dump(settings.model_dump(mode="json", context=REVEAL_SECRETS))
    )


def child_environment(environ: Mapping[str, str], config_file: Path) -> dict[str, str]:
    """A service's environment: this one, its ``LANDFALL_*`` settings only in the file.

    The file has them, overrides included; passed again, they would undo the stack's
    own choices in it (the broker's address, the API's port). The variables landfall
    reads outside its settings (how to log, where jars are) pass as they are.
    """
    return {
        **{k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)},
        **{k: v for k, v in environ.items() if is_other_variable(k)},
        f"{ENV_PREFIX}CONFIG": str(config_file),
    }
