"""The fault matrix: the real acceptance suite on cpu-local with one fault injected at a time.

Each fault must fail exactly the tests it concerns, each with a message naming the cause; every other
test passes or is skipped for a stated reason; nothing is left behind. docs/faults.md's fault matrix
lists these faults, the test that catches each and how long the run takes to fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import docker
import pytest
from docker.errors import NotFound

import kit
from harness.config import ROOT
from harness.owner import LABEL, Owner

from .runner import TARGET, faulty_target, leftovers, run_suite
from .tiers import LANDING

pytestmark = pytest.mark.kit

STAGE = {n: f"tests/acceptance/test_0{n}_{name}.py" for n, name in
         ((1, "environment"), (2, "container"), (3, "mooncake"), (4, "serving"), (5, "kv_pool"))}
ENV, MC, SERVE, POOL = "test_01_environment", "test_03_mooncake", "test_04_serving", "test_05_kv_pool"
DEVICES = TARGET.npu.devices
INSTANCES = [x.name for x in TARGET.instances]


def device5(**state) -> Callable[[dict], None]:
    return lambda d: d["npu"]["emulator"]["devices"][5].update(state)


def instance2(**fields) -> Callable[[dict], None]:
    return lambda d: d["instances"][1].update(fields)


def without_flag(args: list[str], flag: str) -> list[str]:
    """args without `flag VALUE`."""
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def every(module: str, tests: list[str], params: list[str], message: str) -> dict[str, str]:
    return {f"{module}::{t}[{p}]": message for t in tests for p in params}


@dataclass
class Fault:
    name: str
    stages: list[int]
    # failing test id -> fragment(s) of its message, each required; every other test passes or skips
    expect: dict[str, str | tuple[str, ...]]
    change: Callable[[dict], None] | None = None
    rc: int = 1
    output_names: str | None = None  # for a usage error (no test runs): what the output must name
    max_seconds: float | None = None
    kill_master_after: str | None = None  # a plugin kills the master when this test ends
    base: str = "cpu-local"  # the target the fault is injected into
    # A -k expression: only the tests the fault needs run (stage 5's steps are minutes each on an AVX2-only CPU);
    # every selected test but the expected ones must still pass.
    select: str | None = None


SERVING_TESTS = ["test_instance_healthy", "test_served_model_listed", "test_completion_returns_text",
                 "test_kv_connector_active"]
MASTER_DOWN = "deployment: the Mooncake master failed"
# The master is Mooncake's Python entry point: with the package hidden it exits, and its log tail says why.
MASTER_UNIMPORTABLE = (MASTER_DOWN, "exited during start-up", "No module named 'mooncake.cli'")
# An empty folder mounted over the installed package: `import mooncake.store` fails, and so does the master.
EMPTY = ".cache/selftest/empty"
MOONCAKE_PACKAGE = "/opt/venv/lib/python3.11/site-packages/mooncake"

FAULTS = [
    Fault("npu link down", [1], {f"{ENV}::test_link_up[device5]": "device 5: link DOWN, expected UP"},
          device5(link="DOWN")),
    Fault("npu net health fault", [1], {f"{ENV}::test_net_health[device5]": "device 5: net health 'Fault'"},
          device5(net_health="Fault")),
    Fault("npu without ip", [1], {f"{ENV}::test_ip_matches_hccn_conf[device5]": "device 5: no IP"},
          device5(ip=None)),
    Fault("hccn.conf missing", [1],
          {f"{ENV}::test_hccn_conf_present": "/etc/hccn.conf is missing",
           **every(ENV, ["test_ip_matches_hccn_conf"], [f"device{d}" for d in DEVICES], "/etc/hccn.conf is missing")},
          lambda d: d["npu"]["emulator"].update(hccn_conf=False)),
    Fault("ip disagrees with hccn.conf", [1],
          {f"{ENV}::test_ip_matches_hccn_conf[device5]": "says address_5=192.0.2.99"}, device5(conf_ip="192.0.2.99")),
    Fault("image missing", [1, 2], {}, lambda d: d["container"].update(image="kvpool-no-such-image:1", build=None),
          max_seconds=30),
    Fault("device missing on the host", [1, 2], {},
          lambda d: d["container"]["devices"].append("/dev/kvpool-no-such-device:/dev/davinci9"), max_seconds=30),
    Fault("mooncake not importable", [3],
          {f"{MC}::test_mooncake_importable": "`import mooncake, mooncake.store` failed",
           f"{MC}::test_master_healthy": MASTER_UNIMPORTABLE,
           f"{MC}::test_master_listens_in_the_container": MASTER_UNIMPORTABLE,
           f"{MC}::test_pool_round_trip": MASTER_UNIMPORTABLE},
          lambda d: d["container"]["volumes"].append({"host": EMPTY, "container": MOONCAKE_PACKAGE, "mode": "ro"})),
    Fault("master rpc port already in use", [3],
          {f"{MC}::{t}": "already accepts connections before the master started"
           for t in ("test_master_healthy", "test_master_listens_in_the_container", "test_pool_round_trip")}),
    Fault("master killed between stages", [3, 4],
          every(SERVE, SERVING_TESTS, INSTANCES, "the Mooncake master (pid"), kill_master_after="test_pool_round_trip",
          max_seconds=60),
    # Killed right after its /health answered: the container's own process table and sockets say it is gone.
    Fault("master killed after its health check", [3],
          {f"{MC}::test_master_listens_in_the_container": "no process for pid",
           f"{MC}::test_pool_round_trip": "deployment: the Mooncake master (pid"},
          kill_master_after="test_master_healthy", max_seconds=60),
    Fault("instance fails to start (bad argument)", [4],
          every(SERVE, SERVING_TESTS, INSTANCES, "instance-2 exited before it became healthy"),
          instance2(args=TARGET.instances[1].args + ["--no-such-flag"]), max_seconds=90),
    # Start-up failures of the pool client, named by the line that says so (harness/failure_lines.py): Mooncake
    # 0.3.13's client refuses a segment under 16 MiB at once (the probe of stage 3 brings its own 16 MiB). A master
    # the instances cannot reach is refused before the run (MOONCAKE_CONFIG_PATH must be the file stage 3 proved), so
    # its 20 tries are read on a recording, in tests/unit/test_failure_lines.py.
    Fault("pool segment under the client's minimum", [4],
          every(SERVE, SERVING_TESTS, INSTANCES,
                ("its pool segment could not be allocated (log line", "Failed to allocate segment memory")),
          lambda d: d["mooncake"]["config"].update(global_segment_size=8 << 20), max_seconds=150),
    Fault("served model name mismatch", [4],
          {f"{SERVE}::test_served_model_listed[instance-2]": "instance-2: /v1/models lists ['qwen-typo']",
           f"{SERVE}::test_completion_returns_text[instance-2]": ("answered 404", "The model `qwen` does not exist")},
          instance2(served_model_name="qwen-typo")),
    Fault("instance never healthy in time", [4],
          every(SERVE, SERVING_TESTS, INSTANCES, "instance-2 not healthy on http://127.0.0.1:8003/health after 5 s"),
          instance2(ready_timeout_s=5), max_seconds=90),
    # The probe's side of it (all prompts inconclusive: the pool hit had 0 cached tokens) is test_probe.py's.
    Fault("instance 2 without the pool connector", [5],
          {f"{POOL}::test_step3_cross_instance_hit_on_instance_2": "no KV came from the pool"},
          instance2(kv_transfer_config=None), select="step1 or step3"),
    # The correctness probe's power: the pool hands instance 2 KV computed by other weights (same path string,
    # so the pool keys match; --load-format dummy gives it random weights of its own).
    Fault("instance 2 loads other weights under the same path", [5],
          {f"{POOL}::test_pool_hit_output_equals_local_hit": "gave other greedy tokens from the pool than from the "
                                                             "local cache; first: prompt 0 differs at token",
           f"{POOL}::test_pool_hit_close_to_cold_output": "far from the cold output"},
          instance2(args=TARGET.instances[1].args + ["--load-format", "dummy"]), select="pool_hit"),
    Fault("instances with different --hf-overrides (rope_theta)", [5], {},
          instance2(args=TARGET.instances[1].args + ["--hf-overrides", '{"rope_theta": 10000.0}']),
          rc=4, output_names="instances[1].args --hf-overrides", max_seconds=30),
    Fault("instances keyed differently (model path string)", [5], {}, instance2(model_path="/model/qwen2-tiny"),
          rc=4, output_names="instances[1].model_path", max_seconds=30),
    # Both instances on the default lookup_rpc_port share one lookup socket: when one dies, the other stalls.
    Fault("instances share the lookup socket (lookup_rpc_port)", [5], {},
          lambda d: [x["kv_transfer_config"].pop("kv_connector_extra_config") for x in d["instances"]],
          rc=4, output_names="instances[1].kv_transfer_config.kv_connector_extra_config.lookup_rpc_port",
          max_seconds=30),
    # vllm-ascend 0.23's AscendStoreConnector names its lookup socket the same way; its guide's example port is "0".
    Fault("AscendStoreConnector instances on one lookup_rpc_port", [5], {},
          lambda d: [x["kv_transfer_config"].update(kv_connector="AscendStoreConnector", kv_connector_extra_config={
              "backend": "mooncake", "lookup_rpc_port": "0"}) for x in d["instances"]],
          rc=4, output_names="instances[1].kv_transfer_config.kv_connector_extra_config.lookup_rpc_port: '0' is also "
                             "instance-1's", max_seconds=30),
    Fault("step 3 without any evidence source", [5], {}, lambda d: d["benchmark"].update(evidence=[]),
          rc=4, output_names="benchmark.evidence: is empty", max_seconds=30),
    # The eviction's negative control: with instance 1's whole KV space (~1500 blocks), dataset B's 28 prompts leave
    # dataset A in its own cache, and step 2 would time the local cache while the report called it the pool's.
    Fault("instance 1 keeps its whole KV cache (dataset B cannot evict dataset A)", [5],
          {f"{POOL}::test_step2_local_hit_on_instance_1": "did not evict it, so step 2 measured the local cache"},
          lambda d: d["instances"][0].update(args=without_flag(TARGET.instances[0].args, "--num-gpu-blocks-override")),
          select="step1 or evict or step2"),
    Fault("threshold too strict", [5],
          {f"{POOL}::test_step3_cross_instance_hit_on_instance_2": "(thresholds.cross_instance_ttft_fraction)"},
          lambda d: d["thresholds"].update(cross_instance_ttft_fraction=0.01), select="step1 or step3"),
    # Two nodes (cpu-local-2node): the successor guide's cross-node checks and traps.
    Fault("peer NPU unreachable (two nodes)", [1],
          {f"{ENV}::test_peer_npu_reachable[node1-device5]": "device 5 of node1: device 5 of node2 at 192.0.2.25 is "
                                                             "unreachable (0 of 3 replies"},
          lambda d: d.setdefault("npu", {"emulator": {"devices": {5: {"unreachable": ["192.0.2.25"]}}}}),
          base="cpu-local-2node",
          max_seconds=60),
    Fault("TLS switch differs across nodes", [1],
          {f"{ENV}::test_tls_switch_agrees[device3]": "device 3: the TLS switch differs across nodes (node1 disabled, "
                                                      "node2 enabled"},
          lambda d: d["nodes"][1]["npu"]["emulator"]["devices"][3].update(tls_switch=1),
          base="cpu-local-2node", max_seconds=60),
    Fault("master_server_address on the wrong node", [1], {},
          lambda d: d["mooncake"]["config"].update(master_server_address="198.18.77.12:50088"),
          rc=4, output_names="mooncake.config.master_server_address: node node1's connectors would look for the "
                             "master at 198.18.77.12, but it runs on node node1", base="cpu-local-2node",
          max_seconds=30),
    # The negative control of step 3's cross-node evidence: instance 2 moved to node 1, so its hits never cross.
    Fault("both instances on one node of two", [5],
          {f"{POOL}::test_step3_cross_instance_hit_on_instance_2": "none from the other node's"},
          lambda d: d["instances"][1].update(node="node1", host="198.18.77.11",
                                             env={"MOONCAKE_REQUESTER_LOCAL_HOSTNAME": "198.18.77.11"}),
          base="cpu-local-2node", select="step1 or step3"),
    # Node 2's daemon does not answer (ssh to a closed port): the run says which node, and starts nothing on node 1.
    Fault("a node's Docker daemon unreachable", [1, 2], {},
          lambda d: (d.pop("network"),
                     d["container"].update(network_mode="host", build=None, image=kit.ensure_kit(TARGET)),
                     d["nodes"][1].update(docker="ssh://root@127.0.0.1:1")),
          base="cpu-local-2node", max_seconds=60),
]
# Faults every test of the run must report with the same cause (nothing can run without the container).
ALL_FAIL = {"image missing": ("is not on this host",),
            "device missing on the host": ("docker could not start container",
                                           'adding custom device "/dev/kvpool-no-such-device"'),
            "a node's Docker daemon unreachable": ("node node2: no Docker daemon answers at ssh://root@127.0.0.1:1",)}

KILL_MASTER = '''
import subprocess
def pytest_runtest_teardown(item, nextitem):
    if item.name == {test!r}:
        subprocess.run(["docker", "exec", {container!r}, "pkill", "-KILL", "-f", "mooncake_master"], check=True)
'''


@pytest.fixture
def foreign_container():
    """A container with the target's name that the suite did not start: it must be left alone."""
    client = docker.from_env()
    image = client.images.list(name=TARGET.container.image)[0]
    c = client.containers.run(image.tags[0], ["sleep", "infinity"], name=TARGET.container.name, detach=True,
                              init=True)
    yield c
    c.remove(force=True)


# A colleague's --keep-deployment session on the same daemon, as its labels name it.
ANOTHER_RUN = Owner("cpu-local-20261202-170512", "2026-12-02T17:05:12+00:00", "alice", "another-host", 2222, kept=True)


@pytest.fixture
def another_runs_container():
    """A container with the target's name and the suite's labels, of another run: it must be left alone, unless the
    run is told to replace it."""
    client = docker.from_env()
    c = client.containers.run(kit.ensure_kit(TARGET), ["sleep", "infinity"], name=TARGET.container.name, detach=True,
                              init=True, labels={**ANOTHER_RUN.labels("deployment"), f"{LABEL}.target": TARGET.name})
    yield c
    try:
        c.remove(force=True)
    except NotFound:
        pass  # replaced by the run under test


@pytest.fixture
def taken_port():
    """Something else listening on the master's RPC port."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", TARGET.mooncake.master.port))
    s.listen()
    yield s
    s.close()


def small(data: dict) -> None:
    """The landing tier's stage-5 dataset: one wave of 10 prompts shows each stage-5 fault as the target's 40 do (a
    40-prompt step is ~80 s on one AVX2 core), 4 probe prompts as 8 do. The full tier runs the target's own sizes.
    Dataset B keeps its own size: it must still overflow instance 1's 160 blocks to evict dataset A."""
    bench = data.setdefault("benchmark", {})
    bench["num_prompts"] = 10
    bench.setdefault("correctness", {})["num_prompts"] = 4


def check(fault: Fault, run) -> None:
    failing = run.failing()
    first = next(iter(failing.items()), ("(none)", ""))
    print(f"FAULT {fault.name} | rc {run.rc} | {run.seconds:.1f} s | {len(failing)} failing | {first[0]} | "
          f"{first[1].splitlines()[0][:160] if first[1] else ''}")
    assert run.rc == fault.rc, run.output[-3000:]
    if fault.output_names is not None:
        assert fault.output_names in run.output and "Traceback" not in run.output, run.output[-2000:]
    if fault.name in ALL_FAIL:
        assert run.verdicts and set(run.verdicts.values()) == {"error"}, run.verdicts
        assert all("deployment: " in m and all(f in m for f in ALL_FAIL[fault.name]) for m in failing.values()), failing
    else:
        assert set(failing) == set(fault.expect), f"failing {sorted(failing)}, expected {sorted(fault.expect)}"
        for test, fragments in fault.expect.items():
            for fragment in (fragments,) if isinstance(fragments, str) else fragments:
                assert fragment in failing[test], f"{test}: {failing[test]!r} does not name the cause {fragment!r}"
    for test, verdict in run.verdicts.items():
        if verdict == "skipped":
            assert run.messages[test], f"{test} was skipped without a stated reason"
    if fault.max_seconds is not None:
        assert run.seconds < fault.max_seconds, f"took {run.seconds:.0f} s to fail (limit {fault.max_seconds} s)"
    assert leftovers() == []


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_is_caught(fault: Fault, tmp_path, request, tier):
    held = request.getfixturevalue("taken_port") if fault.name == "master rpc port already in use" else None
    (ROOT / EMPTY).mkdir(parents=True, exist_ok=True)
    env, extra = None, []
    if fault.kill_master_after:
        (tmp_path / "kill_master.py").write_text(KILL_MASTER.format(test=fault.kill_master_after,
                                                                    container=TARGET.container.name))
        env, extra = {**os.environ, "PYTHONPATH": str(tmp_path)}, ["-p", "kill_master"]
    def change(data: dict) -> None:
        if fault.change:
            fault.change(data)
        if 5 in fault.stages and tier == LANDING:
            small(data)

    target = faulty_target(tmp_path, change, fault.base)
    select = ["-k", fault.select] if fault.select else []
    run = run_suite(tmp_path, f"--target={target}", *extra, *select, *(STAGE[n] for n in fault.stages), env=env)
    if held is not None:
        held.close()  # our own listener is not the suite's leftover
    check(fault, run)


# Stage 1 on the spellings of another driver than the default (npu.emulator.driver; harness/hccn.py cites each):
# green, and device 5's link DOWN caught alone, as on the default driver's.
OTHER_DRIVERS = ["ascend950", "mindie-doc"]


@pytest.mark.parametrize("driver", OTHER_DRIVERS)
def test_stage_1_on_another_drivers_spellings(driver, tmp_path):
    def on(d: dict) -> None:
        d["npu"]["emulator"]["driver"] = driver

    green = run_suite(tmp_path, f"--target={faulty_target(tmp_path, on)}", STAGE[1])
    print(f"stage 1 on {driver}: rc {green.rc}, {len(green.verdicts)} tests, {green.seconds:.1f} s")
    assert green.rc == 0 and green.failing() == {} and green.verdicts, green.output[-3000:]
    assert leftovers() == []
    link_down = Fault(f"npu link down ({driver})", [1],
                      {f"{ENV}::test_link_up[device5]": "device 5: link DOWN, expected UP"},
                      lambda d: (on(d), device5(link="DOWN")(d)))
    check(link_down, run_suite(tmp_path, f"--target={faulty_target(tmp_path, link_down.change)}", STAGE[1]))


def test_name_taken_by_a_foreign_container(tmp_path, foreign_container):
    run = run_suite(tmp_path, STAGE[1])
    failing = run.failing()
    print(f"FAULT name taken by a foreign container | rc {run.rc} | {run.seconds:.1f} s | {len(failing)} failing | "
          f"{next(iter(failing.values()), '')[:160]}")
    assert run.rc == 1 and failing and set(run.verdicts.values()) == {"error"}
    assert all("was not started by this suite" in m for m in failing.values()), failing
    foreign_container.reload()
    assert foreign_container.status == "running", "the suite touched a container it did not start"
    assert leftovers() == []


def test_name_taken_by_another_runs_deployment(tmp_path, another_runs_container):
    name = TARGET.container.name
    run = run_suite(tmp_path, STAGE[1])
    print(f"FAULT name taken by another run's deployment | rc {run.rc} | {run.seconds:.1f} s | "
          f"{next((line for line in run.output.splitlines() if 'belongs to another run' in line), '')[:300]}")
    whose = (f"container {name!r} (running) belongs to another run of this suite: run cpu-local-20261202-170512, "
             "started 2026-12-02T17:05:12+00:00 by alice on host another-host (pid 2222), kept on purpose with "
             "--keep-deployment. It is left alone. To remove it and start this run's own, add --replace-deployment, or "
             f"remove it by hand: docker rm -f {name}.")
    assert run.rc == 4 and whose in run.output and "Traceback" not in run.output, run.output[-3000:]
    assert "passed" not in run.verdicts.values(), run.verdicts
    assert run.seconds < 60, f"took {run.seconds:.0f} s to refuse"
    another_runs_container.reload()
    assert another_runs_container.status == "running", "the run removed another run's container"
    assert leftovers() == [f"container {name}"]  # that container, and nothing of the refused run

    # With the flag, the same run removes it and goes on with its own.
    run = run_suite(tmp_path, "--replace-deployment", STAGE[1])
    assert run.rc == 0 and f"--replace-deployment: another run's container {name} removed" in run.output, \
        run.output[-3000:]
    assert set(run.verdicts.values()) <= {"passed", "skipped"} and "passed" in run.verdicts.values(), run.verdicts
    with pytest.raises(NotFound):
        another_runs_container.reload()
    assert leftovers() == []
