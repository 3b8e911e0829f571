"""The torrent helpers are exact (bencoding, info hash) and really move bytes between two qBittorrents."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import QbtFactory
from tests.torrent_files import (
    Bencodable,
    add_peer,
    bencode,
    make_torrent,
    seed,
    wait_complete,
    write_payload,
)

PAYLOAD_SIZE = 256 * 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"i0e"),
        (42, b"i42e"),
        (-3, b"i-3e"),
        (2**70, b"i1180591620717411303424e"),
        (b"", b"0:"),
        (b"spam", b"4:spam"),
        (b"\x00\xff", b"2:\x00\xff"),
        ("", b"0:"),
        ("é", b"2:\xc3\xa9"),
        ([], b"le"),
        ([1, "a", b"b"], b"li1e1:a1:be"),
        ((1, [2]), b"li1eli2eee"),
        ({}, b"de"),
        ({"b": 1, "a": 2}, b"d1:ai2e1:bi1ee"),
        ({"a": 1, "Z": 2, "aa": 3}, b"d1:Zi2e1:ai1e2:aai3ee"),  # raw byte order: Z < a < aa
        ({b"\xff": 1, b"\x00": 2}, b"d1:\x00i2e1:\xffi1ee"),
        ({"cow": "moo", "spam": ["a", {"x": []}]}, b"d3:cow3:moo4:spaml1:ad1:xleeee"),
    ],
)
def test_bencode(value: Bencodable, expected: bytes) -> None:
    assert bencode(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        (1.5, TypeError),
        (None, TypeError),
        ({1: 2}, TypeError),
        ({"a": 1, b"a": 2}, ValueError),  # the same key twice once encoded
    ],
)
def test_bencode_refuses(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        bencode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 16384, 16385, 100_000])
def test_make_torrent_info_hash(tmp_path: Path, size: int) -> None:
    """The hash equals SHA-1 of the info dict bencoded by hand, and that dict is in the .torrent."""
    payload = write_payload(tmp_path, "payload.bin", size)
    data = payload.read_bytes()
    torrent, info_hash = make_torrent(payload)

    pieces = b"".join(
        hashlib.sha1(data[i : i + 16384], usedforsecurity=False).digest() for i in range(0, size, 16384)
    )
    info = b"d6:lengthi%de4:name11:payload.bin12:piece lengthi16384e6:pieces%d:%se" % (
        size,
        len(pieces),
        pieces,
    )
    assert info_hash == hashlib.sha1(info, usedforsecurity=False).hexdigest()
    assert len(info_hash) == 40
    assert info_hash == info_hash.lower()
    assert torrent.startswith(b"d")
    assert torrent.endswith(b"4:info" + info + b"e")
    assert b"announce" not in torrent


def test_make_torrent_piece_length(tmp_path: Path) -> None:
    payload = write_payload(tmp_path, "p.bin", 70_000)
    torrent, info_hash = make_torrent(payload, piece_length=32768)
    assert b"12:piece lengthi32768e6:pieces60:" in torrent  # 3 pieces
    assert info_hash != make_torrent(payload)[1]
    with pytest.raises(ValueError, match="power of two"):
        make_torrent(payload, piece_length=20000)
    with pytest.raises(ValueError, match="power of two"):
        make_torrent(payload, piece_length=8192)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        make_torrent(tmp_path / "empty")


def test_write_payload_is_deterministic(tmp_path: Path) -> None:
    first = write_payload(tmp_path / "a", "x.bin", 5000).read_bytes()
    assert write_payload(tmp_path / "b", "x.bin", 5000).read_bytes() == first
    assert write_payload(tmp_path / "c", "y.bin", 5000).read_bytes() != first
    assert len(first) == 5000
    assert len(set(first)) > 200  # not a short repeating pattern


@pytest.mark.slow
async def test_magnet_downloads_from_seeder(qbt_binary: tuple[str, str], qbt_factory: QbtFactory) -> None:
    """A leecher given only a magnet and the seeder's address gets the exact bytes over loopback."""
    version, _ = qbt_binary
    seeder, leecher = await asyncio.gather(qbt_factory(), qbt_factory())
    # Under the seeder's profile, i.e. under /tmp: the only path the 5.1 chroot shares.
    payload = write_payload(seeder.downloads / "seed", "payload.bin", PAYLOAD_SIZE)
    info_hash = await seed(seeder, payload)

    loop = asyncio.get_running_loop()
    started = loop.time()
    magnet = f"magnet:?xt=urn:btih:{info_hash}&dn={quote(payload.name)}"
    target = leecher.downloads / "x"
    status, body = await leecher.api("POST", "torrents/add", urls=magnet, savepath=str(target))
    assert (status, body) == (200, "Ok.")
    await add_peer(leecher, info_hash, seeder.torrent_port)
    torrent = await wait_complete(leecher, info_hash)
    elapsed = loop.time() - started
    print(f"\nqbt{version} ({leecher.version}): magnet added -> complete in {elapsed:.2f} s")

    assert torrent["hash"] == info_hash
    assert torrent["size"] == PAYLOAD_SIZE
    assert Path(torrent["save_path"]) == target
    assert (target / payload.name).read_bytes() == payload.read_bytes()
