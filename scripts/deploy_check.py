#!/usr/bin/env python3
"""Starts the holdfast binary exactly as each shipped deployment file configures a replica, and
expects /ready to answer 200 (on the path and port the file's own probe names, for Kubernetes).

  deploy_check.py compose BINARY     docker-compose.yml's holdfast-1 service
  deploy_check.py kubernetes BINARY  deploy/kubernetes/: the Deployment's container, with its
                                     ConfigMap and Secret (envFrom) and env

Only what cannot exist here is rewritten: host names (postgres, redis-N, the Kubernetes
Services) become the test's Postgres and Redis nodes, the Postgres database becomes a throwaway
one (its role is created if missing), the listen ports become free ones, and secrets that are
shipped empty (on purpose) get test values. Everything else is passed as the file says, so a
setting the binary refuses fails here instead of in a user's cluster.

Needs DATABASE_URL and REDIS_URLS of the test dependencies (scripts/dev-env.sh env) and PyYAML.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    print(f"deploy_check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interpolate(value, env):
    """Compose's variable syntax: ${V}, ${V:-d}, ${V-d}, ${V:?msg}, ${V?msg}, $V, $$."""

    def one(match):
        whole = match.group(0)
        if whole == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        val = env.get(name)
        if op in (":-", "-"):
            return arg if (val is None or (op == ":-" and val == "")) else val
        if op in (":?", "?"):
            if val is None or (op == ":?" and val == ""):
                raise KeyError(f"{name}: {arg}")
            return val
        return val or ""

    pattern = r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    return re.sub(pattern, one, str(value))


def test_deps():
    db = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
    redis = [urllib.parse.urlsplit(u) for u in os.environ["REDIS_URLS"].split(",")]
    return db, redis


def throwaway_database(role, password):
    """A fresh database owned by `role` on the test server; returns its name."""
    db, _ = test_deps()
    admin = f"postgresql://{db.username or 'postgres'}@{db.hostname}:{db.port}/postgres"
    name = f"holdfast_deploy_{uuid.uuid4().hex[:12]}"
    sql = (
        f"do $$ begin if not exists (select from pg_roles where rolname = '{role}') then "
        f"create role \"{role}\" login password '{password}'; end if; end $$;"
    )
    for statement in (sql, f'create database "{name}" owner "{role}"'):
        subprocess.run(["psql", admin, "-q", "-v", "ON_ERROR_STOP=1", "-c", statement], check=True,
                       stdout=subprocess.DEVNULL)
    return admin, name


def drop_database(admin, name):
    subprocess.run(["psql", admin, "-q", "-c", f'drop database if exists "{name}" with (force)'],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rewrite_database_url(url, database):
    parts = urllib.parse.urlsplit(url)
    db, _ = test_deps()
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return urllib.parse.urlunsplit((parts.scheme, f"{auth}{db.hostname}:{db.port}", f"/{database}", parts.query, ""))


def rewrite_redis_urls(urls):
    _, redis = test_deps()
    out = []
    for i, url in enumerate(u for u in urls.split(",") if u.strip()):
        parts = urllib.parse.urlsplit(url.strip())
        target = redis[i % len(redis)]
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        out.append(urllib.parse.urlunsplit((parts.scheme, f"{auth}{target.hostname}:{target.port}", parts.path, "", "")))
    return ",".join(out)


def with_port(addr, port):
    host = addr.rsplit(":", 1)[0]
    return f"{host}:{port}"


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def run_replica(binary, args, env, ready_url, what):
    """Starts the binary with exactly `env` (plus PATH), waits for ready_url to answer 200, then
    stops it with SIGTERM and expects a clean exit."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"holdfast-deploy-{what}.log"), "w+")
    process = subprocess.Popen([binary, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        status = None
        while time.time() < deadline:
            if process.poll() is not None:
                log.seek(0)
                fail(f"{what}: holdfast exited with {process.returncode} at start-up:\n{log.read()[-3000:]}")
            status = get(ready_url)
            if status == 200:
                break
            time.sleep(0.2)
        else:
            log.seek(0)
            fail(f"{what}: {ready_url} never answered 200 (last: {status}):\n{log.read()[-3000:]}")
        print(f"deploy_check: {what}: {ready_url} answered 200")
        # The Dockerfile's HEALTHCHECK runs `holdfast healthcheck` with the container's env.
        health = subprocess.run([binary, "healthcheck"], env=full_env, capture_output=True, timeout=10)
        if health.returncode != 0:
            fail(f"{what}: `holdfast healthcheck` (the Dockerfile's HEALTHCHECK) failed: {health.stderr!r}")
        print(f"deploy_check: {what}: `holdfast healthcheck` passes")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                fail(f"{what}: holdfast did not exit after SIGTERM")
    if process.returncode != 0:
        fail(f"{what}: holdfast exited with {process.returncode} after SIGTERM")


def check_compose(binary):
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    service = compose["services"]["holdfast-1"]
    environment = service["environment"]
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)

    # As shipped, without JWT_SECRET in the environment, compose must refuse to start.
    try:
        {k: interpolate(v, {}) for k, v in environment.items()}
        fail("compose: JWT_SECRET has a default; a stack started as shipped would accept a known secret")
    except KeyError as err:
        print(f"deploy_check: compose: refuses to start without JWT_SECRET ({err})")

    shell = {"JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex}
    env = {k: interpolate(v, shell) for k, v in environment.items()}
    user = urllib.parse.urlsplit(env["DATABASE_URL"])
    admin, database = throwaway_database(user.username, user.password or "")
    try:
        env["DATABASE_URL"] = rewrite_database_url(env["DATABASE_URL"], database)
        env["REDIS_URLS"] = rewrite_redis_urls(env["REDIS_URLS"])
        port = free_port()
        env["LISTEN_ADDR"] = with_port(env["LISTEN_ADDR"], port)
        env["REDIS_KEY_PREFIX"] = f"deploy-compose-{uuid.uuid4().hex[:8]}:"
        args = service.get("command") or ["serve"]  # the image's CMD
        run_replica(binary, args, env, f"http://127.0.0.1:{port}/ready", "compose")
    finally:
        drop_database(admin, database)


def check_kubernetes(binary):
    folder = os.path.join(ROOT, "deploy", "kubernetes")
    docs = []
    for name in sorted(os.listdir(folder)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(folder, name)) as f:
                docs.extend(d for d in yaml.safe_load_all(f) if d)
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployment = by_kind["Deployment"]["holdfast"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(by_kind["ConfigMap"][source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            secret = by_kind["Secret"][source["secretRef"]["name"]]
            env.update(secret.get("stringData", {}))
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", ""))

    # Secrets ship empty on purpose: the binary must refuse to start with them as they are.
    shipped = {"PATH": os.environ.get("PATH", ""), **env, "LISTEN_ADDR": f"127.0.0.1:{free_port()}"}
    refused = subprocess.run([binary, *container.get("args", [])], env=shipped, capture_output=True, timeout=30)
    if refused.returncode == 0:
        fail("kubernetes: holdfast started with the shipped (empty) secrets")
    print("deploy_check: kubernetes: refuses to start with the shipped empty secrets")

    admin, database = throwaway_database("holdfast", "holdfast")
    try:
        env["JWT_SECRET"] = uuid.uuid4().hex + uuid.uuid4().hex
        env["DATABASE_URL"] = rewrite_database_url("postgres://holdfast:holdfast@db:5432/x", database)
        env["REDIS_URLS"] = rewrite_redis_urls(env["REDIS_URLS"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        local = {name: free_port() for name in ports}
        env["LISTEN_ADDR"] = with_port(env["LISTEN_ADDR"], local["http"])
        if "METRICS_LISTEN_ADDR" in env:
            env["METRICS_LISTEN_ADDR"] = with_port(env["METRICS_LISTEN_ADDR"], local["metrics"])
        env["REDIS_KEY_PREFIX"] = f"deploy-k8s-{uuid.uuid4().hex[:8]}:"
        probe = container["readinessProbe"]["httpGet"]
        probe_port = probe["port"] if isinstance(probe["port"], int) else local[probe["port"]]
        if container["livenessProbe"]["httpGet"]["path"] != "/health":
            fail("kubernetes: the liveness probe must be /health (it touches no dependency)")
        run_replica(binary, container.get("args", []), env, f"http://127.0.0.1:{probe_port}{probe['path']}", "kubernetes")
    finally:
        drop_database(admin, database)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("compose", "kubernetes"):
        print(__doc__)
        sys.exit(2)
    {"compose": check_compose, "kubernetes": check_kubernetes}[sys.argv[1]](sys.argv[2])
