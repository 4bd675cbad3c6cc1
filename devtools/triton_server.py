"""A real tritonserver on this machine, from the nvidia-pytriton wheel, for tests and demos.

The wheel ships the tritonserver binary, its Python backend and one backend stub per Python
version; it runs on the CPU. `LocalTriton` prepares what the binary needs (a writable backends
folder with the stub for this interpreter, library and command paths, see docs/triton.md),
starts it in explicit model-control mode on free or given ports and waits until it is live.

    python -m devtools.triton_server --http-port 8100 --grpc-port 8101 --metrics-port 8102 --models examples/models

runs one in the foreground until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from devtools.ports import free_port

INSTALL_HINT = "pip install nvidia-pytriton==0.7.0"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_BACKENDS_CACHE = REPO / "var" / "triton-backends"
# echo, slow and broken: Python-backend models for the CPU (docs/triton.md).
EXAMPLE_MODELS = REPO / "examples" / "models"
STARTUP_TIMEOUT_S = 30.0
# Seconds Triton waits for in-flight inferences when told to stop (its own default is 30).
EXIT_TIMEOUT_S = 5
PORT_ATTEMPTS = 3


class TritonNotInstalled(RuntimeError):
    """The nvidia-pytriton wheel (which carries the tritonserver binary) is not installed."""


# Read once at import: sysconfig fills its cache lazily and not thread-safely (LIBDIR came back
# None when several Tritons started in parallel threads).
_PYTHON_LIBDIR = sysconfig.get_config_var("LIBDIR")


class TritonStartError(RuntimeError):
    """tritonserver did not come up; the message ends with the tail of its log."""


class _PortTaken(TritonStartError):
    pass


def _wheel_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            f"tritonserver comes from the nvidia-pytriton wheel, which is not installed: {INSTALL_HINT}"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonNotInstalled(f"{root / 'bin' / 'tritonserver'} is missing; reinstall the wheel: {INSTALL_HINT}")
    return root


def prepare_backends(cache_root: Path = DEFAULT_BACKENDS_CACHE) -> Path:
    """A backends folder with this interpreter's Python backend stub next to libtriton_python.so.

    Made once per wheel version and Python version under `cache_root` and reused afterwards.
    """
    wheel = _wheel_root()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonNotInstalled(f"nvidia-pytriton has no Python backend stub for Python {python_version} ({stub})")
    target = cache_root / f"pytriton-{importlib.metadata.version('nvidia-pytriton')}-py{python_version}"
    if (target / "python" / "triton_python_backend_stub").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_root))
    shutil.copytree(wheel / "backends", staging / "backends", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, staging / "backends" / "python" / "triton_python_backend_stub")
    try:
        # A rename is atomic: a concurrent start sees either nothing or a complete folder.
        (staging / "backends").rename(target)
    except OSError:
        if not (target / "python" / "triton_python_backend_stub").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def server_environment() -> dict[str, str]:
    """The environment tritonserver and its Python backend stub need (docs/triton.md, steps 2 and 3)."""
    env = dict(os.environ)
    site_packages = _wheel_root().parent.parent
    # The stub must find this interpreter's libpython before the system's (a different patch
    # release breaks threading), and the wheel's bundled libraries once copied elsewhere.
    library_path = [_PYTHON_LIBDIR, str(site_packages / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        library_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    # Model code imports numpy and friends from the venv the stub finds through PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
    return env


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (Linux: its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}").removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A is TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class LocalTriton:
    """One tritonserver process in explicit model-control mode, serving `model_repository`.

    Ports left out are chosen free (and chosen again if another process takes one first).
    `load_models` names models to load at start, or "*" for all of them.
    """

    def __init__(
        self,
        model_repository: str | Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        load_models: Sequence[str] | str = (),
        log_path: str | Path | None = None,
        backends_dir: str | Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} is not a folder")
        self.host = host
        self._given_ports = (http_port, grpc_port, metrics_port)
        self.http_port, self.grpc_port, self.metrics_port = self._given_ports
        self.load_models = [load_models] if isinstance(load_models, str) else list(load_models)
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.backends_dir = Path(backends_dir) if backends_dir is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start tritonserver and return once it answers /v2/health/live (models named in
        `load_models` are loaded, or failed, by then)."""
        if self.running:
            return
        backends = prepare_backends(self.backends_dir or DEFAULT_BACKENDS_CACHE)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.http_port, self.grpc_port, self.metrics_port = (
                port or free_port(self.host) for port in self._given_ports
            )
            try:
                self._launch(backends)
                return
            except _PortTaken:
                # Free ports chosen here can be taken by another process before Triton binds them.
                if any(self._given_ports) or attempt == PORT_ATTEMPTS:
                    raise

    def _launch(self, backends: Path) -> None:
        command = [
            str(_wheel_root() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            # No GPU here; without this Triton retries DCGM every metrics interval.
            "--allow-gpu-metrics=false",
            # A model that fails to load is reported UNAVAILABLE instead of stopping the server.
            "--exit-on-error=false",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            *(f"--load-model={name}" for name in self.load_models),
            *self.extra_args,
        ]
        assert self.log_path is not None
        with self.log_path.open("wb") as log:
            # A session of its own: Ctrl-C in a terminal reaches this process, which stops Triton in order.
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                tail = self.log_tail()
                error = _PortTaken if "already in use" in tail else TritonStartError
                raise error(f"tritonserver exited while starting; the end of {self.log_path}:\n{tail}")
            # Triton logs "Started" before binding; only sockets it holds prove the ports are its own.
            if self._ports() <= _listening_ports(self._process.pid) and self._is_live():
                return
            time.sleep(0.05)
        tail = self.log_tail()
        self._terminate()
        raise TritonStartError(
            f"tritonserver was not live within {self.startup_timeout_s:g} s; the end of {self.log_path}:\n{tail}"
        )

    def _ports(self) -> set[int]:
        return {port for port in (self.http_port, self.grpc_port, self.metrics_port) if port is not None}

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float = 5) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.http_port, timeout=timeout)
        try:
            connection.request(method, path, body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _is_live(self) -> bool:
        try:
            return self._request("GET", "/v2/health/live")[0] == 200
        except OSError:
            return False

    def is_ready(self) -> bool:
        """Triton's readiness: with its strict readiness, every model it tried to load is ready."""
        return self._request("GET", "/v2/health/ready")[0] == 200

    def models(self) -> list[dict]:
        """Triton's repository index: name, and version, state and reason once it tried to load one."""
        status, body = self._request("POST", "/v2/repository/index")
        if status != 200:
            raise RuntimeError(f"tritonserver answered HTTP {status} for its repository index: {body!r}")
        return json.loads(body)

    def reload_with_parameter(self, model: str, name: str, value: str) -> None:
        """Load `model` again with one parameter of its configuration changed (Triton's load API
        with a configuration override), e.g. the `slow` example's `delay_ms`."""
        status, body = self._request("GET", f"/v2/models/{model}/config")
        if status != 200:
            raise RuntimeError(f"tritonserver has no configuration for {model!r} (HTTP {status}): {body!r}")
        config = json.loads(body)
        config.setdefault("parameters", {})[name] = {"string_value": value}
        request = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
        status, body = self._request("POST", f"/v2/repository/models/{model}/load", request, timeout=60)
        if status != 200:
            raise RuntimeError(f"tritonserver did not reload {model!r} (HTTP {status}): {body!r}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait(self) -> int:
        """Block until tritonserver exits by itself; its exit status."""
        if self._process is None:
            return 0
        return self._process.wait()

    def stop(self) -> None:
        """Stop tritonserver and remove the log if it was a temporary file made here."""
        self._terminate()
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def kill(self) -> None:
        """SIGKILL tritonserver and its backend stubs at once, as a crash or the OOM killer would:
        its open connections are reset and new ones refused, with no graceful drain."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=EXIT_TIMEOUT_S + 10)
            except subprocess.TimeoutExpired:
                # The group also holds the Python backend stubs it started.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def __enter__(self) -> LocalTriton:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.triton_server",
        description="Run a real tritonserver (CPU, from the nvidia-pytriton wheel) in the foreground.",
    )
    parser.add_argument("--models", default="examples/models", help="model repository (default: examples/models)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8100)
    parser.add_argument("--grpc-port", type=int, default=8101)
    parser.add_argument("--metrics-port", type=int, default=8102)
    parser.add_argument(
        "--load", nargs="*", default=["*"], metavar="MODEL", help="models to load at start (default: all; none: --load)"
    )
    parser.add_argument("--log", help="write Triton's log here (default: a temporary file, removed at exit)")
    parser.add_argument(
        "--slow-delay-ms", type=int, metavar="MS", help="the `slow` example model's time per request (default 200)"
    )
    args = parser.parse_args(argv)
    triton = LocalTriton(
        args.models,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        load_models=args.load,
        log_path=args.log,
    )
    # SIGINT too: a shell starts background jobs with SIGINT ignored, so `kill -INT` would do nothing.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _stop_on_signal)
    try:
        triton.start()
        if args.slow_delay_ms is not None:
            triton.reload_with_parameter("slow", "delay_ms", str(args.slow_delay_ms))
        print(f"tritonserver is live: HTTP {triton.http_url}  gRPC {triton.grpc_url}  metrics {triton.metrics_url}")
        print(f"repository {triton.model_repository}, log {triton.log_path}")
        for model in triton.models():
            reason = model.get("reason", "").splitlines()
            print(f"  {model['name']}: {model.get('state', 'not loaded')} {reason[0] if reason else ''}".rstrip())
        if not triton.is_ready():
            print("not ready: Triton counts itself ready only when every model it tried to load is ready")
        print("Ctrl-C stops it", flush=True)
        status = triton.wait()
        print(f"tritonserver exited with status {status}; the end of its log:\n{triton.log_tail()}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        return 0
    except (TritonNotInstalled, TritonStartError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        triton.stop()


if __name__ == "__main__":
    sys.exit(main())
