"""Real control-plane replicas for tests and benchmarks: `manage.py serve` processes on loopback,
each with its own data folder (SQLite database, Raft journal), one shared password and one Redis.

`Cluster` starts and stops them (also as a context manager); `Writer` keeps writing through
whichever are running; `assert_converged` checks that no acknowledged write was lost."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from devtools.ports import free_port
from devtools.serve import TEST_SECRET, ServeProcess, clean_env, collected_static_root, manage
from devtools.waiting import wait_until

RAFT_PASSWORD = "a-long-shared-raft-password-for-tests"
REDIS_URL = os.environ.get("MESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass
class ReplicaProcess(ServeProcess):
    name: str
    data_dir: Path
    raft_address: str
    http_port: int
    env: dict[str, str]
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "serve.log"
        self.port = self.http_port

    def manage(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return manage(*args, env=self.env, timeout=timeout)


def replica_database_url() -> str | None:
    """A fresh PostgreSQL database per replica when the suite runs on PostgreSQL, else None (SQLite)."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        return None
    import psycopg

    server, _, _ = base.rpartition("/")
    database = f"infermesh_replica_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
        connection.execute(f'CREATE DATABASE "{database}"')
    return f"{server}/{database}"


def drop_database(url: str | None) -> None:
    if not url or not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg

    server, _, database = url.rpartition("/")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def lose_database(replica: ReplicaProcess) -> None:
    """Throw away a stopped replica's database (SQLite files, or its PostgreSQL database) and migrate a new one."""
    url = replica.env.get("DATABASE_URL")
    if url:
        import psycopg

        server, _, database = url.rpartition("/")
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{database}"')
    else:
        for path in replica.data_dir.glob("infermesh.sqlite3*"):
            path.unlink()
    result = replica.manage("migrate", "--noinput")
    assert result.returncode == 0, result.stderr


class Cluster:
    def __init__(self, root: Path, size: int = 3, redis_url: str | None = REDIS_URL, **extra_env: str) -> None:
        self.root = root
        self.redis_url = redis_url
        self.extra_env = extra_env
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.replicas = [
            self._replica(index, address, [a for a in addresses if a != address])
            for index, address in enumerate(addresses)
        ]

    def _replica(self, index: int, address: str, peers: list[str]) -> ReplicaProcess:
        data_dir = self.root / f"replica{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            data_dir,
            SECRET_KEY=TEST_SECRET,
            MESH_RAFT_ADDRESS=address,
            MESH_RAFT_PEERS=",".join(peers),
            MESH_RAFT_PASSWORD=RAFT_PASSWORD,
            MESH_LOG_FORMAT="json",
            STATIC_ROOT=str(collected_static_root()),
            **({"REDIS_URL": self.redis_url} if self.redis_url else {}),
            **({"DATABASE_URL": url} if (url := replica_database_url()) else {}),
            **self.extra_env,
        )
        return ReplicaProcess(f"replica{index}", data_dir, address, free_port(), env)

    def new_replica(self) -> ReplicaProcess:
        """A replica to join this cluster: migrated and started with every current member as its peers."""
        replica = self._replica(len(self.replicas), f"127.0.0.1:{free_port()}", [r.raft_address for r in self.replicas])
        result = replica.manage("migrate", "--noinput")
        assert result.returncode == 0, result.stderr
        self.replicas.append(replica)
        replica.start()
        replica.wait_http()
        return replica

    def start(self) -> None:
        for replica in self.replicas:
            result = replica.manage("migrate", "--noinput")
            assert result.returncode == 0, result.stderr
        for replica in self.replicas:
            replica.start()
        for replica in self.replicas:
            replica.wait_http()
        self.wait_for_leader()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        for replica in self.replicas:
            drop_database(replica.env.get("DATABASE_URL"))

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()  # the replicas that did start
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def ensure_admin(self) -> None:
        """The admin account (`manage.py ensure_admin`), made through the first replica."""
        created = self.replicas[0].manage("ensure_admin")
        assert created.returncode == 0, created.stderr

    def issue_token(self, replica: ReplicaProcess | None = None, name: str = "tests") -> str:
        """An API token for the admin, issued through `replica`'s control socket (the first replica's by default)."""
        issued = (replica or self.replicas[0]).manage("apitoken", "issue", "admin", name)
        assert issued.returncode == 0, issued.stderr
        return issued.stdout.strip().splitlines()[-1]

    def status(self, replica: ReplicaProcess, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"{replica.url}/api/v1/cluster/", headers=headers, timeout=5)
        response.raise_for_status()
        return response.json()

    def wait_for_leader(self, timeout: float = 20) -> ReplicaProcess:
        """The replica that leads, once every running replica agrees on it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = {}
            for replica in self.running():
                answer = replica.manage("cluster_status")
                if answer.returncode == 0:
                    views[replica.name] = json.loads(answer.stdout)
            leaders = {view.get("leader") for view in views.values()}
            if len(views) == len(self.running()) and len(leaders) == 1 and None not in leaders:
                leader_address = leaders.pop()
                return next(r for r in self.replicas if r.raft_address == leader_address)
            time.sleep(0.2)
        raise AssertionError(f"no agreed leader within {timeout}s: {views}")

    def running(self) -> list[ReplicaProcess]:
        return [r for r in self.replicas if r.process and r.process.poll() is None]

    def followers(self) -> list[ReplicaProcess]:
        leader = self.wait_for_leader()
        return [r for r in self.running() if r is not leader]


def api(replica: ReplicaProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{replica.url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=15)


class Writer(threading.Thread):
    """Creates nodes round-robin on the running replicas; remembers which were acknowledged."""

    def __init__(self, cluster: Cluster, token: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.token, self.prefix = cluster, token, prefix
        self.acknowledged: list[str] = []
        self.refused = 0
        self._halt = threading.Event()

    def run(self) -> None:
        for number in itertools.count():
            if self._halt.is_set():
                return
            running = self.cluster.running()
            if not running:
                time.sleep(0.05)
                continue
            name = f"{self.prefix}-{number}"
            try:
                answer = api(running[number % len(running)], self.token).post(
                    "/nodes/", json={"name": name, "address": "10.9.0.1"}, headers={"Idempotency-Key": f"key-{name}"}
                )
            except httpx.HTTPError:
                self.refused += 1
                continue
            if answer.status_code == 201:
                self.acknowledged.append(name)
            else:
                self.refused += 1
                time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def node_names(replica: ReplicaProcess, token: str) -> set[str]:
    answer = api(replica, token).get("/nodes/", params={"page_size": 1000})
    if answer.status_code != 200:  # e.g. a joining replica that does not know the token yet
        return set()
    return {node["name"] for node in answer.json()["results"]}


def assert_converged(cluster: Cluster, token: str, acknowledged: list[str]) -> None:
    def converged() -> bool:
        try:
            views = [api(r, token).get("/cluster/").json() for r in cluster.running()]
        except (httpx.HTTPError, ValueError):
            return False
        # The same state everywhere, and every database has applied all of it.
        return len({v["digest"] for v in views}) == 1 and all(v["projected_seq"] == v["state_seq"] for v in views)

    assert wait_until(converged, timeout=30), "replicas did not reach the same state"
    for replica in cluster.running():
        missing = set(acknowledged) - node_names(replica, token)
        assert not missing, f"{replica.name} lost acknowledged writes: {sorted(missing)[:5]}"
