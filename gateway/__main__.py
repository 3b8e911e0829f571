"""Command line entry point: ``jellyfin-gateway`` or ``python -m gateway``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from . import logs
from .server import serve, supervise
from .settings import SettingsError, load_settings

logger = logging.getLogger("gateway")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"jellyfin-gateway: error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if settings.workers > 1:
        return supervise(settings)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
