"""Put a researcher's config folders in front of the shipped tree in Hydra's search path.

Hydra's own `--config-dir` lands *after* the primary config path, so a user folder could add
configs but never shadow a shipped one, and `hydra.searchpath` entries land there too. A
SearchPathPlugin is Hydra's hook for this; it is registered in-process (no `hydra_plugins`
package needed) and acts only on search paths whose primary source is lab's shipped tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from . import CONFIG_SOURCE, config_search_path

_extra: list[Path] = []  # --config-dir folders of the command being run


class LabUserConfigs(SearchPathPlugin):
    """--config-dir folders, then LAB_CONFIG_DIR, just before lab's shipped configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(e.provider == "main" and e.path == CONFIG_SOURCE for e in search_path.get_path()):
            return
        for uri in config_search_path(_extra)[:-1]:
            search_path.prepend(provider="lab-user", path=uri, anchor=SearchPathQuery(provider="main"))


def register() -> None:
    """Idempotent: make Hydra call LabUserConfigs for every search path it builds in this process."""
    Plugins.instance().register(LabUserConfigs)


@contextmanager
def user_config_dirs(dirs: Sequence[str | Path]) -> Iterator[None]:
    """Search `dirs` (checked now) before the shipped configs while Hydra composes inside."""
    global _extra
    register()
    resolved = [Path(d).expanduser().resolve() for d in dirs]
    config_search_path(resolved)  # ConfigDirNotFoundError for a missing folder, LAB_CONFIG_DIR included
    before, _extra = _extra, resolved
    try:
        yield
    finally:
        _extra = before
