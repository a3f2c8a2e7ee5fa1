"""A real Airflow deployment from the project's own files: scheduler, dag-processor, triggerer, api-server
and a Celery worker on PostgreSQL (metadata) + Redis (Celery broker), rendered from ``airflow.cfg.template``.

``make up`` / ``make down`` / ``make status`` call ``synthcorpus stack up|down|status``; the integration
tests start the same stack through :class:`Stack`. Every process runs in its own session with its PID in
``$AIRFLOW_HOME/run/<name>.pid`` and its output in ``$AIRFLOW_HOME/run/<name>.log``; it is stopped by
that PID (SIGTERM, a grace period, then SIGKILL of it and every process it started). Before anything is
started the rendered config is checked and PostgreSQL, Redis and the ports are probed: a deployment that
cannot come up refuses with one message and leaves nothing running.

Bounded CPU generation: the deployment creates the Airflow pools of ``generate`` (and of engine topic
labelling) and gives each worker ``$SYNTHCORPUS_CPU_THREADS`` = its cores // the CPU pool's slots, so
concurrent llama.cpp processes never oversubscribe the cores (three shards of 2 threads each on 2 cores
ran at ~3 tok/s each instead of ~90 for one).
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .spec.vocabulary import CPU_GENERATE_POOL, CPU_THREADS_ENV, GPU_GENERATE_POOL

# ${NAME} or ${NAME:-default}; a default may itself hold ${OTHER} (filled first: innermost out).
PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}$]*))?\}")
# Generated once per AIRFLOW_HOME and shared by every process: a multi-process deployment whose processes
# each invent their own JWT secret fails its first task with "Invalid auth token".
SECRET_NAMES = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY")
SECRETS_FILE = "secrets.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
ADMIN = "admin"
# What every deployment needs in the rendered airflow.cfg; more for the executors named.
REQUIRED = {
    "core": ("executor", "dags_folder", "fernet_key", "simple_auth_manager_users"),
    "database": ("sql_alchemy_conn",),
    "api": ("port", "base_url", "secret_key"),
    "api_auth": ("jwt_secret",),
    "core:CeleryExecutor": ("execution_api_server_url",),
    "celery:CeleryExecutor": ("broker_url", "result_backend"),
}
# Start order: the api-server serves the execution API every task and the dag-processor report to.
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")
AIRFLOW = str(Path(sys.executable).parent / "airflow")  # the CLI of the venv this package runs in
STOP_GRACE_S = 15.0  # the scheduler was seen ignoring SIGTERM for more than 25 s: SIGKILL after this


class DeployError(RuntimeError):
    """The deployment cannot start (or stop); the message says what to fix."""


def render(template: Path, values: dict[str, str], secrets_file: Path | None = None) -> str:
    """``${NAME}`` and ``${NAME:-default}`` filled from ``values``; the shared secrets from ``secrets_file``
    (created with new random secrets on first use) when ``values`` does not set them. An unset name without
    a default is an error naming the template and every missing name."""
    lines = template.read_text().splitlines(keepends=True)
    # Comments may show the ${...} syntax itself: they are left as they are.
    live = [not line.lstrip().startswith(("#", ";")) for line in lines]
    names = {n for line, on in zip(lines, live) if on for n in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", line)}
    values = dict(values)
    if secrets_file is not None and any(n in names and not values.get(n) for n in SECRET_NAMES):
        shared = load_secrets(secrets_file)
        values.update({n: shared[n] for n in SECRET_NAMES if not values.get(n)})
    missing: dict[str, None] = {}

    def fill(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in values:
            return values[name]
        if default is None:
            missing[name] = None
            return m.group(0)
        return default

    out = []
    for line, on in zip(lines, live):
        while on and (filled := PLACEHOLDER.sub(fill, line)) != line:
            line = filled
        out.append(line)
    text = "".join(out)
    if missing:
        raise DeployError(f"{template}: expected environment variables {', '.join(missing)} to be set")
    return text


def load_secrets(path: Path) -> dict[str, str]:
    """The deployment's shared secrets (JWT, api secret key, Fernet key), created once with mode 0600."""
    if path.exists():
        data = json.loads(path.read_text())
        if all(data.get(n) for n in SECRET_NAMES):
            return data
    data = {
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),  # the format Fernet expects
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return data


def check_config(path: Path) -> configparser.ConfigParser:
    """The rendered airflow.cfg has every option the deployment needs; else one error naming the file and
    each missing ``[section] option``."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    executor = cfg.get("core", "executor", fallback="")
    missing = []
    for key, options in REQUIRED.items():
        section, _, only_for = key.partition(":")
        if only_for and only_for != executor:
            continue
        missing += [f"[{section}] {o}" for o in options if not cfg.get(section, o, fallback="").strip()]
    if missing:
        raise DeployError(f"{path}: expected {', '.join(missing)} to be set (rendered from airflow.cfg.template)")
    return cfg


def cpu_generate_slots(cores: int) -> int:
    """Slots of the CPU generation pool per worker: one llama.cpp process per 4 cores, at least one."""
    return max(1, cores // 4)


def cpu_threads(cores: int, slots: int) -> int:
    """Threads per llama.cpp process so that ``slots`` concurrent processes share ``cores`` without oversubscribing."""
    return max(1, cores // max(1, slots))


@dataclass
class Stack:
    """One deployment: its AIRFLOW_HOME, the values its airflow.cfg is rendered with and its processes."""

    home: Path
    project_dir: Path
    sql_alchemy_conn: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_airflow"
    broker_url: str = "redis://127.0.0.1:6379/0"
    api_port: int = 8080
    worker_log_port: int = 8793
    trigger_log_port: int = 8794
    queue: str = "default"
    worker_concurrency: int = 4
    cpu_slots: int | None = None
    gpu_slots: int = 8
    heartbeat_timeout_s: int = 300
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every process (storage URI, corpora dir)
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Stack:
        """The deployment ``make up`` starts: AIRFLOW_HOME and the ``SYNTHCORPUS_STACK_*`` overrides."""
        e = os.environ if environ is None else environ
        project = Path(e.get("PROJECT_DIR") or Path.cwd())
        kwargs = {}
        for name, key, kind in (("sql_alchemy_conn", "SQL_ALCHEMY_CONN", str), ("broker_url", "BROKER_URL", str),
                                ("api_port", "API_PORT", int), ("worker_log_port", "WORKER_LOG_PORT", int),
                                ("trigger_log_port", "TRIGGER_LOG_PORT", int), ("queue", "QUEUE", str),
                                ("worker_concurrency", "WORKER_CONCURRENCY", int), ("cpu_slots", "CPU_SLOTS", int),
                                ("gpu_slots", "GPU_SLOTS", int)):
            if value := e.get(f"SYNTHCORPUS_STACK_{key}"):
                try:
                    kwargs[name] = kind(value)
                except ValueError:
                    raise DeployError(f"$SYNTHCORPUS_STACK_{key}: expected a whole number, got {value!r}") from None
        passed = {k: e[k] for k in ("SYNTHCORPUS_STORAGE_URI", "SYNTHCORPUS_CORPORA_DIR") if e.get(k)}
        return cls(home=Path(e.get("AIRFLOW_HOME") or project / ".stack"), project_dir=project, env=passed, **kwargs)

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def slots(self) -> int:
        return self.cpu_slots or cpu_generate_slots(self.cores)

    @property
    def threads(self) -> int:
        return cpu_threads(self.cores, self.slots)

    # -- config ------------------------------------------------------------------------------------------
    def values(self) -> dict[str, str]:
        # An explicit driver: SQLAlchemy's default PostgreSQL driver is not the one installed (psycopg2).
        conn = re.sub(r"^postgresql://", "postgresql+psycopg2://", self.sql_alchemy_conn)
        return {
            "PROJECT_DIR": str(self.project_dir),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW_EXECUTOR": "CeleryExecutor",
            "AIRFLOW_SQL_ALCHEMY_CONN": conn,
            "AIRFLOW_API_PORT": str(self.api_port),
            "AIRFLOW_BASE_URL": self.base_url,
            "AIRFLOW_WORKER_LOG_PORT": str(self.worker_log_port),
            "AIRFLOW_TRIGGER_LOG_PORT": str(self.trigger_log_port),
            "AIRFLOW_DEFAULT_QUEUE": self.queue,
            "AIRFLOW_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout_s),
            "AIRFLOW_PARALLELISM": str(max(4, self.worker_concurrency)),
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": "db+" + conn,
            "CELERY_WORKER_CONCURRENCY": str(self.worker_concurrency),
        }

    def render_config(self) -> Path:
        cfg = self.home / "airflow.cfg"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "openlineage").mkdir(exist_ok=True)
        cfg.write_text(render(self.project_dir / "airflow.cfg.template", self.values(), self.home / SECRETS_FILE))
        check_config(cfg)
        return cfg

    def process_env(self) -> dict[str, str]:
        return {
            **os.environ, **self.env,
            "AIRFLOW_HOME": str(self.home), "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
            "PROJECT_DIR": str(self.project_dir), CPU_THREADS_ENV: str(self.threads),
            "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "SCARF_ANALYTICS": "false", "DO_NOT_TRACK": "1",
        }

    def admin_password(self) -> str:
        """The UI/API password of user admin (SimpleAuthManager), written before the api-server starts."""
        path = self.home / PASSWORDS_FILE
        if path.exists():
            return json.loads(path.read_text())[ADMIN]
        password = secrets.token_urlsafe(12)
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({ADMIN: password}, f)
        return password

    # -- preflight ---------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """PostgreSQL answers (the metadata database is created if missing), Redis answers PING, the drivers
        Airflow needs are installed, and no port of this deployment is taken."""
        import importlib.util

        for module, package in (("psycopg2", "psycopg2-binary"), ("asyncpg", "asyncpg"), ("celery", "apache-airflow-providers-celery")):
            if importlib.util.find_spec(module) is None:
                raise DeployError(f"Airflow on PostgreSQL with Celery needs {module}: pip install {package} (make install does)")
        ensure_database(self.sql_alchemy_conn)
        ping_redis(self.broker_url)
        for port, key in ((self.api_port, "[api] port ($SYNTHCORPUS_STACK_API_PORT)"),
                          (self.worker_log_port, "[logging] worker_log_server_port ($SYNTHCORPUS_STACK_WORKER_LOG_PORT)"),
                          (self.trigger_log_port, "[logging] trigger_log_server_port ($SYNTHCORPUS_STACK_TRIGGER_LOG_PORT)")):
            if not port_free(port):
                raise DeployError(f"port {port} on 127.0.0.1 is in use: choose another {key}")

    # -- lifecycle ---------------------------------------------------------------------------------------
    def commands(self) -> dict[str, list[str]]:
        return {
            "api-server": [AIRFLOW, "api-server", "--port", str(self.api_port), "--host", "127.0.0.1"],
            "scheduler": [AIRFLOW, "scheduler"],
            "dag-processor": [AIRFLOW, "dag-processor"],
            "triggerer": [AIRFLOW, "triggerer"],
            "celery-worker": [AIRFLOW, "celery", "worker", "--queues", self.queue, "--concurrency",
                              str(self.worker_concurrency), "--celery-hostname", self.worker_name],
        }

    @property
    def worker_name(self) -> str:
        return f"synthcorpus-{self.queue}@{socket.gethostname()}"

    def up(self, timeout_s: float = 240.0, say=print) -> None:
        """Render and check the config, probe the services, migrate the database, create the pools and start
        every component; wait until the api-server reports scheduler, dag-processor and triggerer healthy and
        the Celery worker answers. On any failure everything started is stopped again."""
        if running := self.running():
            raise DeployError(f"{self.home}: already running ({', '.join(f'{n} pid {p}' for n, p in running.items())}); "
                              "stop it first: make down")
        cfg = self.render_config()
        say(f"config: {cfg}")
        self.preflight()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.admin_password()
        say("migrating the metadata database ...")
        self._airflow(["db", "migrate"], "db-migrate")
        pools = self.home / "pools.json"
        pools.write_text(json.dumps({
            CPU_GENERATE_POOL: {"slots": self.slots, "description": f"CPU llama.cpp generation and engine topic "
                                f"labelling: {self.slots} per worker, {self.threads} threads each", "include_deferred": False},
            # A deferred (deferrable) pod holds its GPU while the triggerer watches it: it counts against the pool.
            GPU_GENERATE_POOL: {"slots": self.gpu_slots, "description": "Kubernetes GPU generation pods", "include_deferred": True},
        }, indent=2))
        self._airflow(["pools", "import", str(pools)], "pools")
        say(f"pools: {CPU_GENERATE_POOL}={self.slots} ({self.threads} threads per process), {GPU_GENERATE_POOL}={self.gpu_slots}")
        try:
            for name in COMPONENTS:
                self.log_file(name).write_bytes(b"")  # this start's output only
                self.start(name)
            self.wait_healthy(timeout_s)
        except BaseException:
            self.down(say=lambda *_: None)
            raise
        say(f"up: {', '.join(f'{n} pid {p}' for n, p in self.running().items())}")
        say(f"UI: {self.base_url}  (user {ADMIN}, password in {self.home / PASSWORDS_FILE})")

    def start(self, name: str) -> int:
        log = open(self.log_file(name), "ab")
        proc = subprocess.Popen(self.commands()[name], env=self.process_env(), cwd=self.project_dir,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        # The PID, and on a second line the process's start time: a PID recycled since is not ours.
        self.pid_file(name).write_text(f"{proc.pid}\n{start_time(proc.pid)}\n")
        return proc.pid

    def running(self) -> dict[str, int]:
        """Components whose recorded PID is alive and still an Airflow process (a recycled PID is not ours)."""
        return {name: pid for name in COMPONENTS if (pid := self.owned(name))}

    def owned(self, name: str) -> int | None:
        """The PID of a component if the process recorded in its PID file is still alive (same PID, same
        start time), else None."""
        return owned_pid(self.pid_file(name))

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for name in COMPONENTS:
                if not self.owned(name):
                    raise DeployError(f"{name} exited during start-up; its log ({self.log_file(name)}) ends:\n"
                                      + tail(self.log_file(name)))
            waiting = self.unhealthy()
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise DeployError(f"not healthy after {timeout_s:.0f}s: {', '.join(waiting)}; logs in {self.run_dir}")
            time.sleep(1.0)

    def unhealthy(self) -> list[str]:
        """Components that do not report healthy yet (empty when the deployment is up)."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as r:
                health = json.load(r)
        except (OSError, ValueError):
            return ["api-server"]
        waiting = [name for name, key in (("scheduler", "scheduler"), ("dag-processor", "dag_processor"),
                                          ("triggerer", "triggerer"))
                   if (health.get(key) or {}).get("status") != "healthy"]
        if not self.worker_answers():
            waiting.append("celery-worker")
        return waiting

    def worker_answers(self) -> bool:
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.ping(destination=[self.worker_name], timeout=1.0)
        except Exception:  # noqa: BLE001 - broker hiccups while the worker starts
            return False
        finally:
            app.close()
        return any(self.worker_name in r for r in replies)

    def down(self, grace_s: float = STOP_GRACE_S, say=print) -> list[str]:
        """Stop every component by its PID: SIGTERM, then after ``grace_s`` SIGKILL of it and every process it
        started (task processes run in their own process groups). Returns the names stopped."""
        stopped = []
        targets = {}
        for name in reversed(COMPONENTS):
            if pid := self.owned(name):
                targets[name] = (pid, descendants(pid))
                signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name, (pid, children) in targets.items():
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            for p in [pid, *children, *descendants(pid)]:
                signal_pid(p, signal.SIGKILL)
            stopped.append(name)
        for name in COMPONENTS:
            self.pid_file(name).unlink(missing_ok=True)
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return stopped

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and every process it started, at once (a crashed worker machine)."""
        pid = self.owned(name)
        if not pid:
            raise DeployError(f"{name} is not running")
        victims = [pid, *descendants(pid)]
        for p in victims:
            signal_pid(p, signal.SIGKILL)
        for p in victims:
            while alive(p):
                time.sleep(0.05)
        return victims

    def status(self) -> str:
        running = self.running()
        lines = [f"{name:14} {'pid ' + str(running[name]) if name in running else 'stopped'}" for name in COMPONENTS]
        if running:
            waiting = self.unhealthy()
            lines.append(f"UI: {self.base_url}  " + ("healthy" if not waiting else f"not healthy: {', '.join(waiting)}"))
        return "\n".join(lines)

    def _airflow(self, args: list[str], log_name: str) -> None:
        with open(self.log_file(log_name), "wb") as log:
            code = subprocess.run([AIRFLOW, *args], env=self.process_env(), cwd=self.project_dir,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
        if code:
            raise DeployError(f"airflow {' '.join(args)} failed (exit {code}); its log ({self.log_file(log_name)}) ends:\n"
                              + tail(self.log_file(log_name)))


# -- services ------------------------------------------------------------------------------------------------
def _postgres(conn: str) -> tuple[str, str, dict]:
    """(host:port, database, psycopg2 connect arguments without dbname) of a SQLAlchemy PostgreSQL URL."""
    url = urllib.parse.urlsplit(re.sub(r"^postgresql\+\w+", "postgresql", conn))
    if url.scheme != "postgresql":
        raise DeployError(f"$SYNTHCORPUS_STACK_SQL_ALCHEMY_CONN: expected a postgresql:// URL, got {url.scheme}://")
    args = dict(host=url.hostname, port=url.port or 5432, user=url.username or "postgres", password=url.password,
                connect_timeout=5)
    return f"{url.hostname}:{url.port or 5432}", url.path.lstrip("/"), args


def ensure_database(conn: str) -> None:
    """Connect to the metadata database, creating it when PostgreSQL answers but the database is missing."""
    import psycopg2

    where, database, args = _postgres(conn)
    try:
        psycopg2.connect(dbname=database, **args).close()
        return
    except psycopg2.OperationalError as exc:
        if f'database "{database}" does not exist' not in str(exc):
            raise DeployError(f"PostgreSQL at {where} is unreachable ({str(exc).strip().splitlines()[0]}): start it, "
                              "or point $SYNTHCORPUS_STACK_SQL_ALCHEMY_CONN at one") from None
    _admin(args, f'CREATE DATABASE "{database}"')


def drop_database(conn: str) -> None:
    _, database, args = _postgres(conn)
    _admin(args, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _admin(args: dict, statement: str) -> None:
    import psycopg2

    admin = psycopg2.connect(dbname="postgres", **args)
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
    finally:
        admin.close()


def ping_redis(broker_url: str) -> None:
    """Redis answers PING at the broker URL (a plain socket: no client library needed)."""
    url = urllib.parse.urlsplit(broker_url)
    if url.scheme not in ("redis", "rediss"):
        raise DeployError(f"$SYNTHCORPUS_STACK_BROKER_URL: expected a redis:// URL, got {broker_url!r}")
    where = f"{url.hostname}:{url.port or 6379}"
    try:
        with socket.create_connection((url.hostname, url.port or 6379), timeout=5) as s:
            if url.password:
                s.sendall(f"AUTH {url.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        raise DeployError(f"Redis (the Celery broker) at {where} is unreachable ({exc.strerror or exc}): start it, "
                          "or point $SYNTHCORPUS_STACK_BROKER_URL at one") from None
    if not reply.startswith(b"+PONG"):
        raise DeployError(f"Redis at {where} did not answer PING (got {reply[:40]!r})")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- processes -----------------------------------------------------------------------------------------------
def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), '' if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def owned_pid(path: Path) -> int | None:
    """The PID in a PID file written by Stack.start, if that very process is alive (its start time matches)."""
    try:
        pid, started = path.read_text().split()[:2]
        pid = int(pid)
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and start_time(pid) == started else None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 25) -> str:
    """The end of a log, led by its last exception line (``SomeError: why``), which shutdown messages of a
    failing process would otherwise push out of view."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text if re.match(r"^[\w.]*(Error|Exception)\b.*: ", line)]
    return "\n".join(([f"last error: {errors[-1]}", "..."] if errors else []) + text[-lines:])
