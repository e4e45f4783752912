"""The Mooncake side: the master's lifecycle and metrics, mooncake.json, and a pool probe client."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import requests

from harness.config import Node, Target
from harness.metrics import Metrics, NotPrometheus
from harness.net import port_accepts
from harness.plan import MASTER, describe_master, describe_mooncake_json
from harness.progress import logger
from harness.runtime import Container, DeploymentError, Process
from harness.waiting import wait_until

log = logger("deployment")  # the master ready: a [deployment] line


def parse_health(status: int, body: str) -> dict | None:
    """The master's GET /health answer -> a dict, or None when it is not a healthy answer.

    Mooncake 0.3.13 answers JSON, returned as it is: `{"status":"ok","role":"leader","ha_state":"serving",
    "service_ready":true,...}`. 0.3.7.post2 (the seed's) answers the two bytes `OK` as text/plain and has
    no readiness field: its admin server starts after its RPC server, so `OK` is read as
    `{"status": "ok", "service_ready": True, "text": "OK"}`. Anything else, or a status other than 200, is None.
    Recorded answers of both: tests/unit/recordings/.
    """
    if status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return {"status": "ok", "service_ready": True, "text": "OK"} if body.strip() == "OK" else None
    return data if isinstance(data, dict) else None


def master_url(target: Target, path: str) -> str:
    """A URL of the master's admin server (`/health`, `/metrics`)."""
    m = target.mooncake.master
    return f"http://{m.host}:{m.metrics_port}{path}"


def master_health(target: Target, timeout: float = 3.0) -> dict | None:
    try:
        r = requests.get(master_url(target, "/health"), timeout=timeout)
    except requests.RequestException:
        return None
    return parse_health(r.status_code, r.text)


def master_metrics(target: Target, timeout: float = 5.0) -> Metrics:
    r = requests.get(master_url(target, "/metrics"), timeout=timeout)
    r.raise_for_status()
    try:
        return Metrics.parse(r.text)
    except NotPrometheus as e:
        raise DeploymentError(str(e)) from None


def require_alive(master: Process) -> None:
    """The pool lives in the master: everything after bring-up needs it, so its death is named, with its log."""
    if not master.alive():
        raise DeploymentError(f"the Mooncake master (pid {master.pid}) is no longer running; its log:\n"
                              f"{master.tail()}")


def start_master(container: Container, target: Target, name: str = MASTER) -> Process:
    """Start the master and wait until its RPC port accepts, /health is ready AND it is still alive.

    The last check matters: a master whose RPC port is taken exits with no message, while its admin
    port may answer /health for a moment first.
    """
    m = target.mooncake.master
    if port_accepts(m.host, m.port):
        raise DeploymentError(f"mooncake master: {m.host}:{m.port} already accepts connections before the master "
                              "started; another process holds the port (see `ss -ltnp`)")
    run = describe_master(target, name)
    proc = Process.start(container, run.name, run.argv, env=run.env, setup=run.setup, workdir=run.workdir)
    health = None  # its last /health answer, for the timeout's message

    def still_running() -> None:
        if not proc.alive():
            raise DeploymentError(f"mooncake master exited during start-up ({' '.join(run.argv)}); "
                                  f"its log:\n{proc.tail()}")

    def ready() -> bool:
        nonlocal health
        still_running()
        health = master_health(target)
        if port_accepts(m.host, m.port) and health and health.get("service_ready", health.get("status") == "ok"):
            time.sleep(0.3)  # the silent-exit case dies within ~100 ms of /health answering
            still_running()
            return True
        return False

    with ExitStack() as owner:
        owner.enter_context(proc)  # stops it on a timeout, an early exit or a Ctrl-C during the wait
        start = time.monotonic()
        if not wait_until(ready, timeout_s=m.ready_timeout_s, interval_s=0.2, since=start):
            raise DeploymentError(f"mooncake master not ready after {m.ready_timeout_s:.0f} s "
                                  f"(rpc {m.host}:{m.port}, /health {health}); its log:\n{proc.tail()}")
        took = time.monotonic() - start
        log.info(f"mooncake master ready in {took:.1f} s", extra={"phase": "master ready", "process_name": name,
                                                                  "seconds": round(took, 1)})
        owner.pop_all()  # ready: the caller owns it now
        return proc


def write_config(container: Container, target: Target, node: Node | None = None) -> str:
    """Render the node's mooncake.json (the target's, with the node's own fields) into its container, where
    MOONCAKE_CONFIG_PATH points."""
    file = describe_mooncake_json(target, node)
    container.put_file(file.path, file.text)
    return file.text


# Runs inside the container: a client with its own small segment puts, gets and removes one key, then
# closes (taking its segment with it), so the pool is left as it was.
PROBE = r"""
import json, os, sys, time, uuid
from mooncake.store import MooncakeDistributedStore
cfg = json.load(open(os.environ["MOONCAKE_CONFIG_PATH"]))
store = MooncakeDistributedStore()
rc = store.setup(cfg.get("local_hostname", "127.0.0.1"), cfg["metadata_server"], 16 << 20, 16 << 20,
                 cfg.get("protocol", "tcp"), cfg.get("device_name", ""), cfg["master_server_address"])
if rc != 0:
    print(json.dumps({"step": "setup", "rc": rc})); sys.exit(1)
key, value = f"kvpool-probe-{uuid.uuid4().hex}", os.urandom(64 << 10)
t0 = time.perf_counter(); put = store.put(key, value); t1 = time.perf_counter()
got = store.get(key); t2 = time.perf_counter()
try:
    removed = store.remove(key, True)  # force: a fresh put still holds its lease
except TypeError:  # 0.3.7.post2 has remove(key) only: wait out the lease (default_kv_lease_ttl, 5 s there)
    deadline = time.monotonic() + 30
    while (removed := store.remove(key)) != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
left = store.is_exist(key)
store.close()
print(json.dumps({"step": "done", "put_rc": put, "get_equal": got == value, "get_len": len(got),
                  "remove_rc": removed, "exists_after_remove": left, "put_ms": (t1 - t0) * 1e3,
                  "get_ms": (t2 - t1) * 1e3, "key": key}))
"""


def probe_command(target: Target) -> tuple[list[str], dict[str, str]]:
    """The pool probe's argv and environment in a node's container."""
    return ["python3", "-c", PROBE], {"MOONCAKE_CONFIG_PATH": target.mooncake.config_path,
                                      "MC_STORE_CLIENT_SETUP_RETRIES": "1"}


# Stage 3 runs this in each node's container: the import, the file it came from and the installed version.
IMPORT_CHECK = ("import json, importlib.metadata as md, mooncake, mooncake.store\n"
                "v = None\n"
                "for dist in ('mooncake-transfer-engine', 'mooncake-transfer-engine-non-cuda', 'mooncake'):\n"
                "    try: v = md.version(dist); break\n"
                "    except md.PackageNotFoundError: pass\n"
                "print(json.dumps({'file': mooncake.__file__, 'version': v}))")


def probe_pool(container: Container, target: Target) -> dict:
    """A put/get/remove round trip through the pool from inside the container."""
    argv, env = probe_command(target)
    r = container.exec(argv, env=env, timeout=60)
    lines = [x for x in r.output.splitlines() if x.startswith("{")]
    if not lines:
        raise DeploymentError(f"pool probe printed no result (exit {r.rc}):\n{r.output[-2000:]}")
    return json.loads(lines[-1]) | {"exit": r.rc}
