"""The deployment's config rendering, its checks and its refusals (synthcorpus.deploy). PostgreSQL and
Redis are the real local servers; the unreachable ones are closed ports."""

from __future__ import annotations

import json
import socket
import stat

import pytest

from synthcorpus.deploy import (
    SECRETS_FILE,
    DeployError,
    Stack,
    check_config,
    cpu_generate_slots,
    cpu_threads,
    ensure_database,
    ping_redis,
    render,
)
from synthcorpus.engines.llamacpp import cpu_threads as engine_threads
from synthcorpus.engines.base import EngineError
from tests.conftest import ROOT

TEMPLATE = ROOT / "airflow.cfg.template"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def stack(tmp_path, **kw) -> Stack:
    return Stack(home=tmp_path / "home", project_dir=ROOT, **kw)


def test_render_fills_defaults_nested_defaults_and_values(tmp_path):
    t = tmp_path / "t.cfg"
    t.write_text("a = ${A}\nb = ${B:-two}\nc = ${C:-sqlite:///${A}/x.db}\nd = ${D:-}\n")
    assert render(t, {"A": "/h"}) == "a = /h\nb = two\nc = sqlite:////h/x.db\nd = \n"
    assert render(t, {"A": "/h", "C": "postgresql://db"}).splitlines()[2] == "c = postgresql://db"


def test_render_names_the_template_and_every_unset_variable(tmp_path):
    t = tmp_path / "t.cfg"
    t.write_text("a = ${A}\nb = ${B}\nc = ${C:-${B}}\n")
    with pytest.raises(DeployError, match=r"t\.cfg: expected environment variables A, B to be set"):
        render(t, {})


def test_secrets_are_generated_once_private_and_shared_by_every_render(tmp_path):
    values = {"PROJECT_DIR": str(ROOT), "AIRFLOW_HOME": str(tmp_path)}
    first = render(TEMPLATE, values, tmp_path / SECRETS_FILE)
    second = render(TEMPLATE, values, tmp_path / SECRETS_FILE)
    assert first == second
    secrets = json.loads((tmp_path / SECRETS_FILE).read_text())
    assert f"jwt_secret = {secrets['AIRFLOW_JWT_SECRET']}" in first and len(secrets["AIRFLOW_JWT_SECRET"]) >= 32
    assert f"fernet_key = {secrets['AIRFLOW_FERNET_KEY']}" in first
    assert stat.S_IMODE((tmp_path / SECRETS_FILE).stat().st_mode) == 0o600
    from cryptography.fernet import Fernet

    Fernet(secrets["AIRFLOW_FERNET_KEY"])  # a valid Fernet key
    # Another home gets its own secrets.
    other = render(TEMPLATE, {**values, "AIRFLOW_HOME": str(tmp_path / "o")}, tmp_path / "o" / SECRETS_FILE)
    assert other.split("jwt_secret = ")[1].split()[0] != secrets["AIRFLOW_JWT_SECRET"]


def test_stack_config_renders_complete_for_celery_on_postgres(tmp_path):
    s = stack(tmp_path, api_port=18080, queue="q1")
    cfg = check_config(s.render_config())
    assert cfg.get("core", "executor") == "CeleryExecutor"
    assert cfg.get("database", "sql_alchemy_conn").startswith("postgresql+psycopg2://")
    assert cfg.get("celery", "result_backend").startswith("db+postgresql+psycopg2://")
    assert cfg.get("api", "base_url") == "http://127.0.0.1:18080"
    assert cfg.get("core", "execution_api_server_url") == "http://127.0.0.1:18080/execution/"
    assert cfg.get("operators", "default_queue") == "q1"


def test_incomplete_rendered_config_is_refused_naming_each_missing_option(tmp_path):
    cfg = tmp_path / "airflow.cfg"
    text = render(TEMPLATE, {**stack(tmp_path).values()}, tmp_path / SECRETS_FILE)
    cfg.write_text(text.replace("jwt_secret =", "# jwt_secret =").replace("broker_url =", "broker_url_x ="))
    with pytest.raises(DeployError, match=r"airflow\.cfg: expected \[api_auth\] jwt_secret, \[celery\] broker_url to be set"):
        check_config(cfg)


def test_unreachable_postgres_is_refused_before_anything_starts(tmp_path):
    s = stack(tmp_path, sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/x")
    with pytest.raises(DeployError, match=r"PostgreSQL at 127\.0\.0\.1:\d+ is unreachable .*start it"):
        s.up(say=lambda *_: None)
    assert not s.run_dir.exists() or not list(s.run_dir.glob("*.pid"))


def test_unreachable_redis_is_refused_before_anything_starts(tmp_path):
    port = closed_port()
    s = stack(tmp_path, broker_url=f"redis://127.0.0.1:{port}/0", sql_alchemy_conn="postgresql://postgres@127.0.0.1:5432/postgres")
    with pytest.raises(DeployError, match=rf"Redis \(the Celery broker\) at 127\.0\.0\.1:{port} is unreachable"):
        s.up(say=lambda *_: None)
    assert not list((tmp_path / "home").glob("run/*.pid"))


def test_a_port_in_use_is_refused_naming_the_option(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = stack(tmp_path, api_port=port, sql_alchemy_conn="postgresql://postgres@127.0.0.1:5432/postgres")
        s.render_config()
        with pytest.raises(DeployError, match=rf"port {port} on 127\.0\.0\.1 is in use: choose another \[api\] port"):
            s.preflight()


def test_real_services_answer_and_a_missing_database_is_created(tmp_path):
    import psycopg2

    name = f"synthcorpus_unit_{tmp_path.name[-12:].replace('-', '_').lower()}"
    conn = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    from synthcorpus.deploy import drop_database

    drop_database(conn)
    ensure_database(conn)
    psycopg2.connect(dbname=name, host="127.0.0.1", user="postgres").close()
    drop_database(conn)
    ping_redis("redis://127.0.0.1:6379/0")


def test_cpu_threads_divide_the_cores_among_the_pool_slots(monkeypatch):
    assert [cpu_generate_slots(c) for c in (1, 2, 4, 16)] == [1, 1, 1, 4]
    assert cpu_threads(2, 1) == 2 and cpu_threads(16, 4) == 4 and cpu_threads(2, 3) == 1
    monkeypatch.setenv("SYNTHCORPUS_CPU_THREADS", "3")
    assert engine_threads() == 3
    monkeypatch.setenv("SYNTHCORPUS_CPU_THREADS", "two")
    with pytest.raises(EngineError, match=r"SYNTHCORPUS_CPU_THREADS: expected a positive whole number"):
        engine_threads()


def test_stack_settings_from_the_environment_are_checked(tmp_path):
    s = Stack.from_env({"PROJECT_DIR": str(ROOT), "AIRFLOW_HOME": str(tmp_path), "SYNTHCORPUS_STACK_API_PORT": "9090",
                        "SYNTHCORPUS_STORAGE_URI": "file:///x"})
    assert s.api_port == 9090 and s.home == tmp_path and s.env == {"SYNTHCORPUS_STORAGE_URI": "file:///x"}
    with pytest.raises(DeployError, match=r"SYNTHCORPUS_STACK_CPU_SLOTS: expected a whole number, got 'many'"):
        Stack.from_env({"SYNTHCORPUS_STACK_CPU_SLOTS": "many"})
