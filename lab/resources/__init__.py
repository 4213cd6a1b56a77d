"""Configs and schemas shipped as package data.

`configs/` and `data_cards/schema/` stay where a researcher looks for them at the top of the
source tree; `lab/resources/configs` and `lab/resources/schema` are symlinks to them, which a
wheel build copies as real files. So the same code finds them in a source checkout, an editable
install and a plain `pip install .`, and never needs the source tree at run time.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "lab.resources.configs"  # Hydra: pkg://lab.resources.configs


def config_dir() -> Path:
    """The shipped Hydra config tree (a real folder in every kind of install)."""
    return Path(str(resources.files("lab.resources") / "configs"))


def user_config_dir() -> Path | None:
    """A researcher's own config folder (env LAB_CONFIG_DIR), searched before the shipped one."""
    value = os.environ.get("LAB_CONFIG_DIR")
    return Path(value).expanduser().resolve() if value else None


def schema_dir() -> Path:
    """JSON Schemas generated from lab's pydantic models (data_cards/schema/ in the source tree)."""
    return Path(str(resources.files("lab.resources") / "schema"))
