"""The end-to-end fleet: a control plane and agents as real processes, `manage.py serve` and
`python -m agents`, on the real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from devtools.serve import REPO, TEST_SECRET, ServeProcess, clean_env, manage

REDIS = "redis://127.0.0.1:6379"


class ControlPlane:
    """One `serve` process on the real Redis (live state, channel layer), with a node registered."""

    def __init__(self, data_dir: Path, **settings: str) -> None:
        env = clean_env(
            data_dir,
            **{
                "SECRET_KEY": TEST_SECRET,
                "REDIS_URL": f"{REDIS}/0",
                "MESH_LIVE_STATE_PREFIX": f"e2e-{uuid.uuid4().hex[:8]}:",
                "MESH_ADMIN_PASSWORD": "an-admin-password-for-e2e",
                **settings,
            },
        )
        if not env["REDIS_URL"]:
            del env["REDIS_URL"]
        self.env = env
        self.serve = ServeProcess(env, data_dir / "serve.log")
        self.port, self.url = self.serve.port, self.serve.url

    def start(self) -> None:
        for command in (("migrate", "--noinput"), ("ensure_admin",)):
            result = manage(*command, env=self.env)
            assert result.returncode == 0, result.stderr
        self.serve.start()
        self.serve.wait_http(timeout=60)

    def register_node(self, name: str) -> str:
        result = manage("node", "register", name, "--address", "127.0.0.1", "--role", "gpu", env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def api_token(self) -> str:
        result = manage("apitoken", "issue", "admin", f"e2e-{uuid.uuid4().hex[:6]}", env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1]

    def get(self, path: str, token: str) -> dict:
        response = httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self.serve.stop()


class AgentProcess:
    """`python -m agents` for one node: a Celery worker with embedded beat on the real Redis broker."""

    def __init__(self, node: str, token: str, control_plane: ControlPlane, work_dir: Path, *extra: str) -> None:
        self.node = node
        token_file = work_dir / f"{node}.token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        self.argv = [
            sys.executable,
            "-m",
            "agents",
            "--node",
            node,
            "--control-plane",
            control_plane.url,
            "--token-file",
            str(token_file),
            "--gpus",
            "simulated",
            "--interval",
            "0.5",
            "--broker",
            f"{REDIS}/3",
            *extra,
        ]
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("MESH_", "DJANGO_"))}
        self.log_path = work_dir / f"agent-{node}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def kill(self) -> None:
        """As a host dies: no goodbye."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker and its embedded beat process
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def dumps(value: object) -> str:
    """`value` as indented JSON, cut to 2,000 characters: for a failure message."""
    return json.dumps(value, indent=1)[:2000]
