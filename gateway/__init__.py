"""A reverse-proxy gateway in front of Jellyfin that adds an admin-only /torrent API."""

from __future__ import annotations

__version__ = "0.1.0"
