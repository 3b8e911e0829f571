"""Start-up failures are reported for what they are: only a socket that cannot be bound is "cannot listen".

A wheel once shipped without templates/, and the gateway said ``cannot listen on 127.0.0.1:8097: No such
file or directory``, sending people to look for a port problem.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import pages
from gateway.server import StartupError, serve
from gateway.settings import load_settings
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _gateway_without_templates(tmp_path: Path) -> Path:
    """The gateway package alone, with no templates/ in it or beside it: a wheel built without them."""
    shutil.copytree(ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _run_gateway(cwd: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m gateway`` from ``cwd``, which must fail at start: its exit status and output."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "JELLYFIN_URL": "http://127.0.0.1:9",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


def test_a_missing_template_folder_is_named_and_not_blamed_on_the_port(tmp_path: Path) -> None:
    root = _gateway_without_templates(tmp_path)
    done = _run_gateway(root, free_port())
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    assert "cannot listen" not in log
    missing = root / "gateway" / "templates" / "static"
    (error,) = _errors(log)
    assert error.endswith(f"cannot start: No such file or directory: {missing}")
    assert "Traceback" not in log


def test_every_worker_names_the_missing_template_folder_and_the_set_exits_non_zero(tmp_path: Path) -> None:
    root = _gateway_without_templates(tmp_path)
    done = _run_gateway(root, free_port(), GATEWAY_WORKERS="2")
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    assert "cannot listen" not in log
    assert log.count("cannot start: No such file or directory") >= 1
    assert "Traceback" not in log


def test_a_port_in_use_is_still_cannot_listen_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_gateway(ROOT, port)
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    (error,) = _errors(log)
    assert error.endswith(f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in log


async def test_serve_raises_a_startup_error_naming_the_file_before_touching_the_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pages, "STATIC", tmp_path / "nowhere" / "static")
    settings = load_settings([], {"GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(free_port())})
    with pytest.raises(StartupError) as raised:
        await serve(settings)
    assert str(raised.value) == f"cannot start: No such file or directory: {tmp_path / 'nowhere' / 'static'}"
