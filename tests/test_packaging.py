"""The wheel works where users install it: a fresh venv outside the checkout, with the pinned dependencies.

`pip install .` once built a wheel without templates/, and the installed gateway could not start. A
checkout or an editable install hides that, so these tests build the wheel as pip does, install it
with constraints.txt into a new venv, and load the admin pages and every file they reference from it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from yarl import URL

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
PROJECT = "jellyfin-torrent-gateway"
# What `pip install .` leaves in a checkout or a developer keeps beside it: not part of the sources.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)
# Relative ES module specifiers: import … from "./x.js", import "./x.js", import("./x.js"), export … from.
JS_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""")


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    """Run a build or install step; its whole output is the failure message when it fails."""
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _pip(*args: str | Path) -> str:
    """The project venv's pip (the pinned one: it knows --build-constraint)."""
    return _run(sys.executable, "-m", "pip", "--disable-pip-version-check", *args)


@dataclass(frozen=True)
class Built:
    source: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The wheel, built by pip from a copy of the tree (a checkout's build/ may hold stale files)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    _pip("wheel", "--no-deps", "--build-constraint", LOCK, "--wheel-dir", tmp / "dist", source)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return Built(source, wheel)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv (outside the checkout) holding the wheel and the runtime dependencies at their pins."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", root)
    _pip("--python", root / "bin" / "python", "install", "--quiet", "-c", LOCK, built.wheel)
    return root


def _visible_files(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in path.parts)
    }


def test_the_wheel_carries_every_file_under_templates(built: Built) -> None:
    prefix = "gateway/templates/"
    with zipfile.ZipFile(built.wheel) as archive:
        shipped = {name.removeprefix(prefix) for name in archive.namelist() if name.startswith(prefix)}
    expected = _visible_files(built.source / "templates")
    assert expected
    assert shipped == expected


def test_the_installed_gateway_reads_its_templates_from_the_venv_not_the_checkout(
    venv: Path, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [venv / "bin" / "python", "-c", "import gateway.pages as p; print(p.TEMPLATES)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv)


class _References(HTMLParser):
    """The scripts, module preloads, stylesheets and admin-page links a page names."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        rel = (found.get("rel") or "").split()
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"] or "")
        elif tag == "link" and "stylesheet" in rel:
            self.styles.append(found.get("href") or "")
        elif tag == "link" and "modulepreload" in rel:
            self.scripts.append(found.get("href") or "")
        elif tag == "a" and found.get("href"):
            self.links.append(found["href"] or "")


@pytest.fixture
def installed_gateway(venv: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``jellyfin-gateway`` from the venv, started in an empty folder, every upstream an unused local port."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        GATEWAY_HOST="127.0.0.1",
        GATEWAY_PORT=str(port),
        JELLYFIN_URL="http://127.0.0.1:9",
        QBITTORRENT_URL="http://127.0.0.1:9",
        APIBAY_URL="http://127.0.0.1:9",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [venv / "bin" / "jellyfin-gateway"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process, port, log
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _get(http: aiohttp.ClientSession, url: URL, content_type: str) -> str:
    async with http.get(url) as resp:
        body = await resp.text()
        assert (resp.status, resp.content_type) == (200, content_type), f"{url}: {resp.status} {body[:200]}"
        return body


async def test_the_installed_gateway_serves_the_admin_pages_and_every_file_they_load(
    installed_gateway: tuple[subprocess.Popen[bytes], int, Path], http: aiohttp.ClientSession
) -> None:
    process, port, log = installed_gateway
    try:
        await wait_for_port(port, process)
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(f"{exc}:\n{log.read_text(errors='replace')}") from exc
    base = URL(f"http://127.0.0.1:{port}")
    ui = base / "torrent" / "ui"
    pages, scripts, styles = [ui / "search"], set[URL](), set[URL]()
    seen: set[URL] = set()
    while pages:
        page = pages.pop()
        if page in seen:
            continue
        seen.add(page)
        found = _References()
        found.feed(await _get(http, page, "text/html"))
        scripts.update(page.join(URL(src)) for src in found.scripts)
        styles.update(page.join(URL(href)) for href in found.styles)
        pages += [
            link
            for href in found.links
            if (link := page.join(URL(href)).with_fragment(None)).path.startswith(f"{ui.path}/")
        ]
    assert scripts, "the page references no script"
    assert styles, "the page references no stylesheet"
    loaded: set[URL] = set()
    while scripts:
        script = scripts.pop()
        if script in loaded:
            continue
        loaded.add(script)
        source = await _get(http, script, "text/javascript")
        scripts.update(script.join(URL(spec)) for spec in JS_IMPORT.findall(source))
    for style in styles:
        await _get(http, style, "text/css")
    process.terminate()
    assert await asyncio.to_thread(process.wait, 10) == 0
    assert "Traceback" not in log.read_text(errors="replace")


def _dependencies(name: str, extras: frozenset[str]) -> dict[str, frozenset[str]]:
    """Every distribution ``name[extras]`` needs on this interpreter, transitively, with the extras asked."""
    needed: dict[str, frozenset[str]] = {}
    todo = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        key = canonicalize_name(current)
        if key in needed and wanted <= needed[key]:
            continue
        needed[key] = needed.get(key, frozenset()) | wanted
        for text in metadata.requires(current) or []:
            requirement = Requirement(text)
            markers = [{"extra": extra} for extra in wanted or {""}]
            if requirement.marker is None or any(requirement.marker.evaluate(m) for m in markers):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return needed


def test_every_dependency_of_the_gateway_and_its_tests_is_pinned_in_the_lock() -> None:
    pins = {
        canonicalize_name(name): version
        for line in LOCK.read_text().splitlines()
        if line and not line.startswith("#")
        for name, _, version in [line.partition("==")]
    }
    assert all(pins.values()), "every line of constraints.txt is name==version"
    needed = set(_dependencies(PROJECT, frozenset({"test"}))) - {canonicalize_name(PROJECT)}
    assert needed - pins.keys() == set(), "not pinned: run `make lock`"
    assert {"pip", "setuptools"} <= pins.keys()
