"""Make .torrent files and move real bytes between two test qbittorrent-nox processes on loopback.

End-to-end tests need a torrent that really downloads without the internet: we write a payload,
build its v1 .torrent ourselves (no tracker, no DHT), let one instance seed it and point another at
the seeder with ``torrents/addPeers``. The recipe and its pitfalls (queueing, the window in which
the WebAPI says "seeding" but the BitTorrent port still refuses peers) are qBittorrent's own
behaviour (libtorrent's listen and announce timing). All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp

from tests.qbittorrent_nox import QbtError, QbtInstance

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "SEED_TIMEOUT",
    "Bencodable",
    "add_peer",
    "bencode",
    "make_torrent",
    "seed",
    "wait_complete",
    "write_payload",
]

Bencodable: TypeAlias = (
    "int | bytes | str | Sequence[Bencodable] | Mapping[str, Bencodable] | Mapping[bytes, Bencodable]"
)

LOOPBACK = "127.0.0.1"
SEED_TIMEOUT = 20.0  # .torrent added -> rechecked to 100 % and seeding
HANDSHAKE_TIMEOUT = 20.0  # seeding in the WebAPI -> its BitTorrent port answers a handshake
ADD_PEER_TIMEOUT = 5.0  # magnet added -> known to the leecher's session (addPeers answers {} before)
POLL_INTERVAL = 0.1
PROBE_TRY_TIMEOUT = 2.0
SEEDING_STATES = frozenset({"uploading", "stalledUP"})
FAILED_STATES = frozenset({"error", "missingFiles"})
PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 1 + len(PROTOCOL) + 8 + 20 + 20
MIN_PIECE_LENGTH = 16 * 1024


def bencode(value: Bencodable) -> bytes:
    """Bencode ``value``: the .torrent format and the input of the info hash, so it must be exact.

    Strings are UTF-8; dict keys (str or bytes) are sorted by their raw bytes, as BEP 3 requires.
    ``bool`` is refused: ``True`` would silently become ``i1e``.
    """
    if isinstance(value, bool):
        raise TypeError(f"cannot bencode a bool ({value!r}); use 0 or 1")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes | bytearray | str):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return b"%d:%s" % (len(raw), raw)
    if isinstance(value, Mapping):
        items: dict[bytes, Bencodable] = {}
        for key, item in value.items():
            if not isinstance(key, bytes | str):
                raise TypeError(f"bencoded dict keys must be str or bytes, not {type(key).__name__}")
            raw_key = key.encode() if isinstance(key, str) else key
            if raw_key in items:
                raise ValueError(f"duplicate bencoded dict key {raw_key!r}")
            items[raw_key] = item
        return b"d" + b"".join(bencode(k) + bencode(items[k]) for k in sorted(items)) + b"e"
    if isinstance(value, Sequence):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def make_torrent(payload: Path, *, piece_length: int = MIN_PIECE_LENGTH) -> tuple[bytes, str]:
    """A v1 .torrent for ``payload`` (a file, or a directory: a multi-file torrent), without announce.

    Returns the .torrent bytes and the lowercase hex info hash (SHA-1 of the bencoded info dict),
    which is the torrent's ID in qBittorrent's WebAPI. A directory's files are listed in path order
    and hashed as one stream (BEP 3), so pieces span file boundaries as in real releases.
    """
    if piece_length < MIN_PIECE_LENGTH or piece_length & (piece_length - 1):
        raise ValueError(f"piece_length must be a power of two >= {MIN_PIECE_LENGTH}, not {piece_length}")
    files = sorted(p for p in payload.rglob("*") if p.is_file()) if payload.is_dir() else [payload]
    data = b"".join(f.read_bytes() for f in files)
    if not data:
        raise ValueError(f"{payload} is empty: libtorrent refuses torrents of size 0")
    pieces = b"".join(
        hashlib.sha1(data[start : start + piece_length], usedforsecurity=False).digest()
        for start in range(0, len(data), piece_length)
    )
    info: dict[str, Bencodable] = {"name": payload.name, "piece length": piece_length, "pieces": pieces}
    if payload.is_dir():
        info["files"] = [
            {"length": f.stat().st_size, "path": list(f.relative_to(payload).parts)} for f in files
        ]
    else:
        info["length"] = len(data)
    info_hash = hashlib.sha1(bencode(info), usedforsecurity=False).hexdigest()  # BEP 3: SHA-1
    torrent: dict[str, Bencodable] = {"created by": "jellyfin-torrent-gateway tests", "info": info}
    return bencode(torrent), info_hash


def write_payload(directory: Path, name: str, size: int) -> Path:
    """Write ``size`` pseudo-random bytes seeded by ``name``: same name, same bytes, every run.

    Random (not a repeating pattern) so that a wrong offset or a mixed-up piece cannot compare equal.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(random.Random(f"{name}:{size}").randbytes(size))
    return path


async def seed(seeder: QbtInstance, payload: Path) -> str:
    """Make ``seeder`` seed ``payload`` from where it lies; return the info hash once peers can connect.

    Queueing goes off first (otherwise a 4th seeding torrent sits in ``queuedUP`` and serves nobody).
    The .torrent is rechecked against the file (``skip_checking=false``) rather than trusted, and we
    wait until the BitTorrent port answers a handshake for the hash: the WebAPI reports seeding up
    to 1.3 s earlier, and a leecher refused in that window backs off for 15-60 s.
    """
    torrent, info_hash = make_torrent(payload)
    status, body = await seeder.api(
        "POST", "app/setPreferences", json=json.dumps({"queueing_enabled": False})
    )
    if status != 200:
        raise QbtError(f"app/setPreferences on {seeder.url} -> {status} {body[:200]!r}")
    await _upload_torrent(seeder, torrent, f"{payload.name}.torrent", payload.parent)
    await _wait_seeding(seeder, info_hash)
    await _wait_handshake(seeder.torrent_port, info_hash, HANDSHAKE_TIMEOUT, seeder)
    return info_hash


async def add_peer(leecher: QbtInstance, info_hash: str, port: int) -> None:
    """Tell ``leecher`` about the peer ``127.0.0.1:<port>`` for ``info_hash`` (no tracker, no DHT).

    A magnet just added may not be in the session yet: addPeers then answers ``{}``, so retry
    briefly; success is ``{"<hash>": {"added": 1, "failed": 0}}``.
    """
    peer = f"{LOOPBACK}:{port}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ADD_PEER_TIMEOUT
    while True:
        status, body = await leecher.api("POST", "torrents/addPeers", hashes=info_hash, peers=peer)
        if status != 200:
            raise QbtError(f"torrents/addPeers {peer} for {info_hash} on {leecher.url} -> {status} {body!r}")
        reply: dict[str, Any] = json.loads(body) if body.strip() else {}
        result = reply.get(info_hash)
        if result is not None:
            if result.get("added") != 1:
                raise QbtError(f"torrents/addPeers {peer} for {info_hash} on {leecher.url}: {body}")
            return
        if loop.time() > deadline:
            raise QbtError(
                f"{info_hash} still unknown to {leecher.url} after {ADD_PEER_TIMEOUT} s "
                f"(addPeers -> {body!r}); torrents: {await leecher.torrents()}"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def wait_complete(qbt: QbtInstance, info_hash: str, timeout: float = 60) -> dict[str, Any]:
    """Poll until ``qbt`` has all of ``info_hash`` (progress 1, pieces verified); return its info dict.

    Fails early on ``error``/``missingFiles`` instead of waiting out the timeout.
    """
    return await _poll_torrent(qbt, info_hash, timeout, lambda t: t["progress"] == 1, "complete")


# -- internals ---------------------------------------------------------------------------------------


async def _upload_torrent(qbt: QbtInstance, torrent: bytes, filename: str, save_path: Path) -> None:
    """``torrents/add`` as multipart, which ``QbtInstance.api`` (forms only) cannot send.

    A separate login in a fresh jar (``unsafe=True``: the host is an IP) keeps the instance's own
    session untouched.
    """
    form = aiohttp.FormData()
    form.add_field("torrents", torrent, filename=filename, content_type="application/x-bittorrent")
    for key, value in {"savepath": str(save_path), "skip_checking": "false", "autoTMM": "false"}.items():
        form.add_field(key, value)
    api = f"{qbt.url}/api/v2"
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        login = {"username": qbt.username, "password": qbt.password}
        async with session.post(f"{api}/auth/login", data=login) as response:
            status, body = response.status, await response.text()
        if not (200 <= status < 300 and body.strip() in ("", "Ok.")):
            raise QbtError(f"login to {qbt.url} for the upload failed: {status} {body[:200]!r}")
        try:
            async with session.post(f"{api}/torrents/add", data=form) as response:
                status, body = response.status, await response.text()
        finally:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(f"{api}/auth/logout"):
                    pass
    # "Ok." up to 5.1; 5.2 answers JSON with success_count (200, or 409 when nothing was added).
    if status != 200 or body.strip() == "Fails.":
        raise QbtError(f"torrents/add of {filename} on {qbt.url} -> {status} {body[:200]!r}")


async def _wait_seeding(seeder: QbtInstance, info_hash: str) -> None:
    """Until the recheck found every piece on disk and the torrent is seeding (not queued, stopped)."""

    def seeding(torrent: dict[str, Any]) -> bool:
        return torrent["progress"] == 1 and torrent["state"] in SEEDING_STATES

    await _poll_torrent(seeder, info_hash, SEED_TIMEOUT, seeding, "seeding")


async def _poll_torrent(
    qbt: QbtInstance, info_hash: str, timeout: float, done: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll ``torrents/info`` for one hash until ``done(torrent)``; errors name the last state seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[str, Any] | None = None
    while True:
        found = await qbt.torrents(hashes=info_hash)
        if found:
            last = found[0]
            if done(last):
                return last
            if last["state"] in FAILED_STATES:
                raise QbtError(f"{info_hash} on {qbt.url} failed: {_summary(last)}\n{qbt.log_tail(10)}")
        if loop.time() > deadline:
            seen = _summary(last) if last else "not listed"
            raise QbtError(f"{info_hash} on {qbt.url} not {what} after {timeout} s: {seen}")
        await asyncio.sleep(POLL_INTERVAL)


def _summary(torrent: dict[str, Any]) -> str:
    keys = ("name", "state", "progress", "size", "save_path", "num_seeds", "num_leechs", "dlspeed")
    return ", ".join(f"{key}={torrent.get(key)!r}" for key in keys)


async def _wait_handshake(port: int, info_hash: str, timeout: float, seeder: QbtInstance) -> None:
    """Probe ``127.0.0.1:<port>`` with BitTorrent handshakes until one is answered for ``info_hash``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error = "no attempt"
    while True:
        try:
            await asyncio.wait_for(_handshake(port, bytes.fromhex(info_hash)), PROBE_TRY_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, QbtError) as error:
            last_error = f"{type(error).__name__}: {error}"
        else:
            return
        if loop.time() > deadline:
            raise QbtError(
                f"{seeder.url} seeds {info_hash} but its BitTorrent port {port} answered no handshake "
                f"within {timeout} s (last: {last_error})\n{seeder.log_tail(10)}"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def _handshake(port: int, info_hash: bytes) -> None:
    """One BEP 3 handshake: a peer serving ``info_hash`` echoes it back in its own handshake.

    Plain (unencrypted) handshakes are accepted at qBittorrent's default encryption setting.
    """
    peer_id = b"-GW0001-" + os.urandom(12)
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(bytes([len(PROTOCOL)]) + PROTOCOL + bytes(8) + info_hash + peer_id)
        await writer.drain()
        reply = await reader.readexactly(HANDSHAKE_LENGTH)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if reply[: 1 + len(PROTOCOL)] != bytes([len(PROTOCOL)]) + PROTOCOL:
        raise QbtError(f"not a BitTorrent handshake: {reply[:20]!r}")
    if reply[28:48] != info_hash:
        raise QbtError(f"handshake for another torrent: {reply[28:48].hex()}")
