"""The project's own commands in child processes with a chosen environment: `manage.py` commands,
and `manage.py serve` on loopback (`ServeProcess`), as the tests and the benchmarks start them."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from devtools.ports import free_port

REPO = Path(__file__).resolve().parents[1]
TEST_SECRET = "a-test-secret-key-that-is-long-and-random-enough-0123456789abcdef"


def clean_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The process environment without any infermesh or Django variables, plus `overrides`."""
    prefixes = (
        "MESH_",
        "DJANGO_",
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "CSRF_",
        "SECURE_",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update({"DJANGO_SETTINGS_MODULE": "infermesh_site.settings", "MESH_DATA_DIR": str(data_dir)})
    # Each process gets its own Raft port, so tests never collide with each other or a running mesh.
    env["MESH_RAFT_ADDRESS"] = f"127.0.0.1:{free_port()}"
    # No embedded agent unless a test asks: it would register this machine as a node.
    env["MESH_LOCAL_AGENT"] = "off"
    env.update(overrides)
    return env


_static_root: Path | None = None


def collected_static_root() -> Path:
    """A STATIC_ROOT holding `collectstatic`'s output, made once per test run and shared by every
    `serve` the tests start: collecting (hashing and compressing the API docs' bundles) takes tens
    of seconds on 2 cores, and the files are the same for every test."""
    global _static_root
    if _static_root is None:
        folder = Path(tempfile.mkdtemp(prefix="infermesh-test-static-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        env = clean_env(folder / "var", SECRET_KEY=TEST_SECRET, STATIC_ROOT=str(folder / "static"))
        result = manage("collectstatic", "--noinput", env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        _static_root = folder / "static"
    return _static_root


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


class ServeFailed(RuntimeError):
    """A `serve` child process exited, or did not answer HTTP in time."""


class ServeProcess:
    """`manage.py serve` as a child process on loopback: its output appended to a log file (never a
    pipe nobody reads), ready once /healthz answers, stopped with SIGTERM (SIGKILL if it hangs)."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None, name: str = "serve") -> None:
        self.name = name
        self.env = env
        self.log_path = log_path
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(self.port), "--no-access-log"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_http(self, timeout: float = 30) -> float:
        """Wait until /healthz answers; the seconds it took."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise ServeFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return time.monotonic() - started
            except httpx.TransportError:
                time.sleep(0.1)
        raise ServeFailed(f"{self.name} did not answer HTTP within {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]
