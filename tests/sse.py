"""Reading a Server-Sent-Events stream in tests: every event with its kind, data and arrival time."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

#: (arrival time on the monotonic clock, event kind, parsed data)
SseEvent = tuple[float, str, Any]


async def read_events(response: aiohttp.ClientResponse, events: list[SseEvent]) -> None:
    """Append each event as it arrives, until the stream ends (run it as a task)."""
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((time.monotonic(), kind, json.loads(line[6:])))
