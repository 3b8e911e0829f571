"""Command line entry point: ``jellyfin-gateway`` or ``python -m gateway``."""

from __future__ import annotations

import faulthandler
import os
import signal
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
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a hung process was doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if settings.workers > 1:
        return supervise(settings)
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
