"""Bad configuration stops start-up with a message that says what to set."""

import pytest

from devtools.ports import free_port
from devtools.serve import TEST_SECRET, clean_env, manage


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "var"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": TEST_SECRET, "DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"SECRET_KEY": TEST_SECRET, "DATABASE_URL": "mongodb://x/y"}, "DATABASE_URL cannot be used"),
        ({"SECRET_KEY": TEST_SECRET, "REDIS_URL": "http://127.0.0.1:6379"}, "is not a Redis URL"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_API_PAGE_SIZE": "0"}, "MESH_API_PAGE_SIZE=0 is too small"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_API_PAGE_SIZE": "many"}, "MESH_API_PAGE_SIZE='many' is not an integer"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_ASGI_SERVER": "gunicorn"}, "MESH_ASGI_SERVER='gunicorn' is not one of"),
        ({"SECRET_KEY_FILE": "/nonexistent/key"}, "SECRET_KEY_FILE='/nonexistent/key' cannot be read"),
        ({"SECRET_KEY": TEST_SECRET, "CSRF_TRUSTED_ORIGINS": "mesh.example.com"}, "needs a scheme"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_LOCAL_TRITON_URLS": "localhost:8100"}, "MESH_LOCAL_TRITON_URLS has"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_LOCAL_AGENT": "sometimes"}, "MESH_LOCAL_AGENT='sometimes' is not one of"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_TELEMETRY_PATH": "fast"}, "MESH_TELEMETRY_PATH='fast' is not one of"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_RAFT_CIPHER": "des"}, "MESH_RAFT_CIPHER='des' is not one of"),
        ({"SECRET_KEY": TEST_SECRET, "MESH_DB_CONN_MAX_AGE": "60"}, "MESH_DB_CONN_MAX_AGE is no longer read"),
        (
            {"SECRET_KEY": TEST_SECRET, "DATABASE_URL": "postgres://u@127.0.0.1:5432/d", "MESH_DB_POOL_SIZE": "1"},
            "MESH_DB_POOL_SIZE=1 is too small",
        ),
    ],
)
def test_it_refuses_to_start_with_a_message_naming_the_setting(data_dir, overrides, message):
    result = manage("check", env=clean_env(data_dir, **overrides))
    assert result.returncode != 0
    assert result.stderr.startswith("Configuration error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_it_reads_the_secret_key_from_a_file(data_dir, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(TEST_SECRET + "\n")
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.SECRET_KEY)",
        env=clean_env(data_dir, SECRET_KEY_FILE=str(key_file)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == TEST_SECRET


def test_it_reads_the_quick_starts_key_from_the_data_folder(data_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "secret_key").write_text(TEST_SECRET + "\n")
    result = manage(
        "shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", env=clean_env(data_dir)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == TEST_SECRET


def test_it_generates_and_keeps_a_key_only_in_debug(data_dir):
    show_key = ("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    first = manage(*show_key, env=clean_env(data_dir, DEBUG="1"))
    second = manage(*show_key, env=clean_env(data_dir, DEBUG="1"))
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip().splitlines()[-1]) >= 50
    assert first.stdout.splitlines()[-1] == second.stdout.splitlines()[-1]
    assert (data_dir / "debug_secret_key").stat().st_mode & 0o077 == 0


def test_it_defaults_to_sqlite_in_wal_mode(data_dir):
    result = manage(
        "shell",
        "-c",
        "from django.db import connection; c = connection.cursor(); c.execute('PRAGMA journal_mode'); "
        "print(connection.vendor, c.fetchone()[0])",
        env=clean_env(data_dir, SECRET_KEY=TEST_SECRET),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["sqlite", "wal"]
    assert (data_dir / "infermesh.sqlite3").exists()


def test_it_refuses_several_replicas_without_a_raft_password(data_dir):
    env = clean_env(data_dir, SECRET_KEY=TEST_SECRET, MESH_RAFT_PEERS="127.0.0.1:7101,127.0.0.1:7102")
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "MESH_RAFT_PASSWORD is not set" in result.stderr
    assert "remote code execution" in result.stderr


def test_postgresql_connections_come_from_a_bounded_pool(data_dir):
    # Settings only: nothing connects, so no PostgreSQL server is needed.
    show = "from django.db import connection as c; print(c.settings_dict['CONN_MAX_AGE'], c.settings_dict['OPTIONS'])"
    url = "postgres://mesh@127.0.0.1:5432/mesh"
    default = manage("shell", "-c", show, env=clean_env(data_dir, SECRET_KEY=TEST_SECRET, DATABASE_URL=url))
    sized = manage(
        "shell",
        "-c",
        show,
        env=clean_env(
            data_dir, SECRET_KEY=TEST_SECRET, DATABASE_URL=url, MESH_DB_POOL_SIZE="5", MESH_DB_POOL_TIMEOUT="3"
        ),
    )
    assert default.returncode == 0, default.stderr
    assert sized.returncode == 0, sized.stderr
    # Persistent connections per thread would pile up under ASGI (a thread per request): none, only the pool.
    assert (
        default.stdout.splitlines()[-1]
        == "0 {'pool': {'min_size': 1, 'max_size': 20, 'timeout': 10, 'name': 'infermesh'}}"
    )
    assert (
        sized.stdout.splitlines()[-1] == "0 {'pool': {'min_size': 1, 'max_size': 5, 'timeout': 3, 'name': 'infermesh'}}"
    )


def test_a_write_a_command_cannot_commit_prints_why_without_a_traceback(data_dir):
    # Peers nobody runs: the command's own replica never sees a leader.
    env = clean_env(
        data_dir,
        SECRET_KEY=TEST_SECRET,
        MESH_RAFT_PEERS=f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}",
        MESH_RAFT_PASSWORD="p" * 32,
        MESH_RAFT_WRITE_TIMEOUT="2",
        MESH_ADMIN_PASSWORD="a-long-enough-password",
    )
    assert manage("migrate", "--noinput", env=env).returncode == 0

    for command in (
        ("ensure_admin",),
        ("createsuperuser", "--noinput", "--username", "bob", "--email", "b@example.com"),
    ):
        result = manage(*command, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "Error: No leader was elected within 2 s: are a majority of the replicas running?"
        )
        assert "Traceback" not in result.stderr
