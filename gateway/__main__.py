"""Command line entry point: ``jellyfin-gateway`` or ``python -m gateway``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import logs
from .server import run, supervise
from .settings import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"jellyfin-gateway: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if settings.workers > 1:
        return supervise(settings)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
