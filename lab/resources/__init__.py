"""Configs and schemas shipped as package data.

`configs/` and `data_cards/schema/` stay where a researcher looks for them at the top of the
source tree; `lab/resources/configs` and `lab/resources/schema` are symlinks to them, which a
wheel build copies as real files. So the same code finds them in a source checkout, an editable
install and a plain `pip install .`, and never needs the source tree at run time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "lab.resources.configs"  # Hydra: pkg://lab.resources.configs
CONFIG_SOURCE = f"pkg://{CONFIG_PACKAGE}"


def config_dir() -> Path:
    """The shipped Hydra config tree (a real folder in every kind of install)."""
    return Path(str(resources.files("lab.resources") / "configs"))


def user_config_dir() -> Path | None:
    """A researcher's own config folder (env LAB_CONFIG_DIR), searched before the shipped one."""
    value = os.environ.get("LAB_CONFIG_DIR")
    return Path(value).expanduser().resolve() if value else None


class ConfigDirNotFoundError(FileNotFoundError):
    """A user config folder (--config-dir / LAB_CONFIG_DIR) that does not exist."""


def config_search_path(extra: Sequence[str | Path] = ()) -> list[str]:
    """Hydra config sources, first match wins: `extra` folders (`--config-dir`), then
    LAB_CONFIG_DIR, then the shipped tree. User folders only add to or shadow shipped files,
    so one holding just `experiment/mine.yaml` composes with every shipped default."""
    dirs = [Path(d).expanduser().resolve() for d in extra]
    if (env := user_config_dir()) is not None:
        dirs.append(env)
    for d in dirs:
        if not d.is_dir():
            raise ConfigDirNotFoundError(f"config folder {d} does not exist (--config-dir / LAB_CONFIG_DIR)")
    unique = list(dict.fromkeys(f"file://{d}" for d in dirs))
    return [*unique, CONFIG_SOURCE]


def schema_dir() -> Path:
    """JSON Schemas generated from lab's pydantic models (data_cards/schema/ in the source tree)."""
    return Path(str(resources.files("lab.resources") / "schema"))
