"""contrib/: the systemd unit is one systemd accepts, its sandbox lets the gateway serve, and the
example environment file names every setting and nothing else.

``systemd-analyze verify`` (Debian's ``systemd`` package) checks the unit as systemd would load it,
including that ExecStart is an executable: a copy is verified with ExecStart pointing at this
environment's console script. A missing systemd-analyze is a failure, never a skip, so a run without
it cannot pass. MemoryDenyWriteExecute is the one sandbox setting a Python program could trip over;
the kernel enforces the same rule for one process with ``PR_SET_MDWE``, so the gateway is run under it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

import aiohttp
import pytest

from gateway.settings import OPTIONS, load_settings
from tests.conftest import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "jellyfin-gateway.service"
ENV_FILE = ROOT / "contrib" / "jellyfin-gateway.env"
#: ``NAME=value``, or ``#NAME=value`` for a setting left at its default (a comment is ``# text``).
_ASSIGNMENT = re.compile(r"#?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: install the Debian package systemd")
    return path


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every directive of a unit file, in order."""
    found = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _only(text: str, key: str) -> str:
    values = [value for section, name, value in _directives(text) if section == "Service" and name == key]
    assert len(values) == 1, f"{key}= should appear once in [Service], found {values}"
    return values[0]


def _console_script() -> Path:
    """This environment's installed copy of the program the unit's ExecStart names."""
    installed = Path(_only(UNIT.read_text(), "ExecStart").split()[0])
    assert installed.is_absolute()
    names = {ep.name for ep in entry_points(group="console_scripts") if ep.value == "gateway.__main__:main"}
    assert installed.name in names, f"ExecStart runs {installed.name}, the console scripts are {names}"
    script = Path(sysconfig.get_path("scripts")) / installed.name
    if not os.access(script, os.X_OK):
        pytest.fail(f"{script} is missing: install the gateway into this environment (pip install -e .)")
    return script


def _local_copy(text: str, directory: Path) -> Path:
    """The unit with ExecStart at this environment's console script and the example environment file."""
    script = _console_script()
    lines = []
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={script}"
        elif line.startswith("EnvironmentFile="):
            line = f"EnvironmentFile={ENV_FILE}"
        lines.append(line)
    path = directory / UNIT.name
    path.write_text("\n".join(lines) + "\n")
    return path


def _verify(unit: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify's exit status and every line of its output about this unit."""
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        check=False,
    )
    output = (result.stdout + result.stderr).splitlines()
    return result.returncode, [line for line in output if unit.name in line or str(unit) in line]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    status, complaints = _verify(_local_copy(UNIT.read_text(), tmp_path))
    assert complaints == []
    assert status == 0


def test_verify_would_notice_a_misspelled_directive(tmp_path: Path) -> None:
    """systemd only warns about an unknown key (and ignores it): the output check is what catches it."""
    broken = UNIT.read_text().replace("LockPersonality=yes", "LockPersonalty=yes")
    assert broken != UNIT.read_text()
    _, complaints = _verify(_local_copy(broken, tmp_path))
    assert any("LockPersonalty" in line for line in complaints), complaints


def test_settings_come_from_the_environment_file_and_never_from_flags() -> None:
    text = UNIT.read_text()
    assert _only(text, "EnvironmentFile") == "/etc/jellyfin-gateway/env"
    assert _only(text, "ExecStart").split()[1:] == []


def _env_file() -> list[tuple[str, str, bool]]:
    """(name, value, set) of every assignment; ``set`` is False for a commented-out default."""
    assignments = []
    for number, raw in enumerate(ENV_FILE.read_text().splitlines(), start=1):
        line = raw.strip()
        match = _ASSIGNMENT.fullmatch(line)
        if match:
            value = match[2].strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            assignments.append((match[1], value, not line.startswith("#")))
        else:
            assert line in ("", "#") or line.startswith("# "), f"{ENV_FILE.name}:{number}: {raw!r}"
    return assignments


def test_the_example_environment_file_names_every_setting_once_and_nothing_else() -> None:
    names = [name for name, _, _ in _env_file()]
    settings = [option.env for option in OPTIONS]
    assert sorted(set(names) - set(settings)) == []
    assert sorted(set(settings) - set(names)) == []
    assert sorted(name for name in set(names) if names.count(name) > 1) == []


def test_the_example_environment_file_shows_the_real_defaults() -> None:
    shown = {name: value for name, value, is_set in _env_file() if not is_set}
    assert load_settings([], shown) == load_settings([], {})


def test_the_values_the_example_environment_file_sets_are_valid() -> None:
    assigned = {name: value for name, value, is_set in _env_file() if is_set}
    assert assigned
    load_settings([], assigned)


#: Runs the rest of its command line with PR_SET_MDWE (MemoryDenyWriteExecute for one process and
#: its children), after checking that the kernel now refuses a writable and executable mapping.
_MDWE_WRAPPER = """
import ctypes, errno, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77 if ctypes.get_errno() == errno.EINVAL else 1)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    os.execv(sys.argv[1], sys.argv[1:])
sys.exit("a writable and executable mapping was allowed")
"""


async def test_the_gateway_serves_under_memory_deny_write_execute(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "2",
        "JELLYFIN_URL": f"http://127.0.0.1:{free_port()}",  # closed: nothing leaves this machine
        "QBITTORRENT_URL": f"http://127.0.0.1:{free_port()}",
        "APIBAY_URL": f"http://127.0.0.1:{free_port()}",
    }
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _MDWE_WRAPPER, str(_console_script())],
            cwd="/",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            await wait_for_port(port, process)
        except RuntimeError:
            if process.wait() == 77:
                pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
            raise AssertionError(log.read_text(errors="replace")) from None
        async with aiohttp.ClientSession() as http:
            for path, status in [("/torrent/openapi.json", 200), ("/torrent/ui/search", 200),
                                 ("/torrent/test1", 401), ("/System/Info/Public", 502)]:  # fmt: skip
                for _ in range(4):  # both workers, whichever the kernel picks
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        await resp.read()
                        assert resp.status == status, (path, log.read_text(errors="replace"))
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text(errors="replace")
    assert "Traceback" not in log.read_text(errors="replace")
