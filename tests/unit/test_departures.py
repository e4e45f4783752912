"""Each target derived from a guide runs the guide's deployment, value for value, except where its `departures:` say
why not: what the target would run (harness/plan.py, from the YAML) against the guide's commands as transcribed once
(tests/unit/recordings/guides/), compared by harness/departures.py. Negative controls: one seed value changed in the
YAML, or one environment variable lost, is named; a departure that no longer differs is named; a departure without a
reason is a config error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness import departures
from harness.config import CONFIGS, ConfigError, load_target
from harness.departures import ABSENT, Difference
from harness.guide import Block, read_transcription
from harness.owner import Owner
from harness.plan import describe

GUIDES_DIR = Path(__file__).parent / "recordings" / "guides"
# Every target derived from a guide, and its guide's transcription; atlas-800t-a2-kvpool follows vllm-ascend
# 0.23.0.post1's KV pool guide (kv_pool.md, AscendStoreConnector, PD-mixed on one server).
GUIDES = {"atlas-800t-a2": "seed.md", "atlas-800t-a2-2node": "pd-colocated-mooncake-multi-instance.md",
          "atlas-800t-a2-kvpool": "kv-pool-mooncake-pd-mixed.md"}
OWNER = Owner("stand-in-run", "2026-01-01T00:00:00+00:00", "someone", "a-host", 1, False)  # labels as a run has them


def transcription(name: str) -> dict[str, Block]:
    return read_transcription((GUIDES_DIR / name).read_text())


def verdict(target_file: str | Path, guide: str) -> departures.Verdict:
    target = load_target(target_file)
    # The image as the target names it: the guide's. (atlas-800t-a2 runs an image derived from it with the seed's
    # "Install Mooncake" steps: targets/atlas/mooncake, tests/unit/test_derive.py.)
    plan = describe(target, target.container.image, OWNER)
    return departures.compare(plan, transcription(guide), target.departures)


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_target_runs_its_guide_but_for_its_departures(name):
    v = verdict(name, GUIDES[name])
    problems = v.problems(f"configs/{name}.yaml")
    assert not problems, "\n".join(problems)
    assert v.departed  # it has departures, each one a real difference: none stale


def test_every_target_with_departures_is_compared():
    listed = {p.stem for p in CONFIGS.glob("*.yaml") if "departures" in (yaml.safe_load(p.read_text()) or {})}
    assert listed == set(GUIDES)


def test_the_two_node_guides_placeholders():
    assert verdict("atlas-800t-a2-2node", GUIDES["atlas-800t-a2-2node"]).bindings == {
        "<your_server_ip>": "90.90.100.188",  # the master's address and instance 1's --host: one value
        "<path_to_your_model>": "/model",
        "<instance_2_host>": "90.90.100.189", "<instance_2_port>": "8003", "<master_node>": "node1"}


def test_the_suites_own_ways_are_few_and_said():
    v = verdict("atlas-800t-a2", "seed.md")
    assert {why for _, why in v.suite} == {why for _, why in departures.SUITE_WAYS}  # each one used, each with a reason
    assert {d.key for d, _ in v.suite} == {
        "container command", "container init", "container option --rm", "container option -it",
        "container label kvpool-acceptance", "container label kvpool-acceptance.run",
        "container label kvpool-acceptance.started", "container label kvpool-acceptance.user",
        "container label kvpool-acceptance.host", "container label kvpool-acceptance.pid",
        "container label kvpool-acceptance.kept", "container label kvpool-acceptance.target",
        "container label kvpool-acceptance.node",
        "instance-1 --enable-prompt-tokens-details", "instance-2 --enable-prompt-tokens-details"}


def _target_with(tmp_path: Path, name: str, change) -> Path:
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    for x in data["instances"]:  # the YAML's anchors make both instances share one env and one args: unshare them
        x["env"], x["args"] = copy.deepcopy(x["env"]), list(x["args"])
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _seed_with(tmp_path: Path, change) -> Path:
    return _target_with(tmp_path, "atlas-800t-a2", change)


def _set_arg(flag: str, value: str):
    def change(data):
        args = data["instances"][0]["args"]
        args[args.index(flag) + 1] = value
    return change


# One seed value changed in the YAML, as an edit or a merge might: the comparison names it, and only it.
NEGATIVE_CONTROLS = {
    "a vllm flag's value": (_set_arg("--max-model-len", "32768"),
                            Difference("instance-1 --max-model-len", "25600", "32768")),
    "a lost environment variable": (lambda d: d["instances"][1]["env"].pop("ASCEND_CONNECT_TIMEOUT"),
                                    Difference("instance-2 env ASCEND_CONNECT_TIMEOUT", "10000", ABSENT)),
    "an environment variable's value": (lambda d: d["instances"][0]["env"].update(ASCEND_BUFFER_POOL="8:8"),
                                        Difference("instance-1 env ASCEND_BUFFER_POOL", "4:8", "8:8")),
    "a lost flag": (lambda d: d["instances"][1]["args"].remove("--enforce-eager"),
                    Difference("instance-2 --enforce-eager", True, ABSENT)),
    "a kv_transfer_config value": (
        lambda d: d["instances"][0]["kv_transfer_config"]["kv_connector_extra_config"].update(load_async=False),
        Difference("instance-1 --kv-transfer-config.kv_connector_extra_config.load_async", True, False)),
    "a mooncake.json value": (lambda d: d["mooncake"]["config"].update(protocol="tcp"),
                              Difference("mooncake.json protocol", "ascend", "tcp")),
    "a lost device": (lambda d: d["container"]["devices"].remove("/dev/hisi_hdc"),
                      Difference("container device /dev/hisi_hdc", "/dev/hisi_hdc:rwm", ABSENT)),
    "a volume's host path": (lambda d: d["container"]["volumes"][7].update(host="/mnt/other/.cache"),
                             Difference("container volume /root/.cache", "/mnt/sfs_turbo/.cache:rw",
                                        "/mnt/other/.cache:rw")),
    "the shm size": (lambda d: d["container"].update(shm_size="2g"), Difference("container shm-size", "1g", "2g")),
}


@pytest.mark.parametrize("what", list(NEGATIVE_CONTROLS))
def test_a_changed_seed_value_is_named(tmp_path, what):
    change, expected = NEGATIVE_CONTROLS[what]
    v = verdict(_seed_with(tmp_path, change), "seed.md")
    assert v.unexplained == [expected]
    assert v.stale == []
    [problem] = v.problems("the target")
    assert problem.startswith(f"{expected.key}: guide ") and "lists no departure" in problem


def _set_master_flag(flag: str, value: str):
    def change(data):
        command = data["mooncake"]["master"]["command"]
        command[command.index(flag) + 1] = value
    return change


# The same on the target of vllm-ascend 0.23's KV pool guide: one of the guide's values changed in the YAML.
KV_POOL_CONTROLS = {
    # (A lost PYTHONHASHSEED never gets this far: harness.traps.hash_seeds_agree refuses the target.)
    "ACL_OP_INIT_MODE lost": (lambda d: d["instances"][1]["env"].pop("ACL_OP_INIT_MODE"),
                              Difference("instance-2 env ACL_OP_INIT_MODE", "1", ABSENT)),
    "the master's lease": (_set_master_flag("--default_kv_lease_ttl", "15000"),
                           Difference("master --default_kv_lease_ttl", "11000", "15000")),
    "the load failure policy": (
        lambda d: d["instances"][0]["kv_transfer_config"].update(kv_load_failure_policy="fail"),
        Difference("instance-1 --kv-transfer-config.kv_load_failure_policy", "recompute", "fail")),
    "the backend": (lambda d: d["instances"][0]["kv_transfer_config"]["kv_connector_extra_config"].update(
                        backend="Mooncake"),  # the connector lower-cases it; the guide writes mooncake
                    Difference("instance-1 --kv-transfer-config.kv_connector_extra_config.backend", "mooncake",
                               "Mooncake")),
    "a mooncake.json value": (lambda d: d["mooncake"]["config"].update(prefer_alloc_in_same_node=False),
                              Difference("mooncake.json prefer_alloc_in_same_node", True, False)),
    "prefix caching on": (lambda d: d["instances"][0]["args"].remove("--no-enable-prefix-caching"),
                          Difference("instance-1 --no-enable-prefix-caching", True, ABSENT)),
}


@pytest.mark.parametrize("what", list(KV_POOL_CONTROLS))
def test_a_changed_kv_pool_guide_value_is_named(tmp_path, what):
    change, expected = KV_POOL_CONTROLS[what]
    v = verdict(_target_with(tmp_path, "atlas-800t-a2-kvpool", change), GUIDES["atlas-800t-a2-kvpool"])
    assert v.unexplained == [expected]
    assert v.stale == []
    [problem] = v.problems("the target")
    assert problem.startswith(f"{expected.key}: guide ") and "lists no departure" in problem


def test_the_kv_pool_guides_redirect_is_the_commands_not_its_programs():
    # pd_mix.sh's `> mix.log 2>&1` is a departure of its own, not arguments of python3.
    departed = {d.key: d for d, _ in verdict("atlas-800t-a2-kvpool", GUIDES["atlas-800t-a2-kvpool"]).departed}
    assert departed["instance-1 redirect"] == Difference("instance-1 redirect", "> mix.log 2>&1", ABSENT)
    assert departed["instance-1 python3"] == Difference("instance-1 python3", [], ABSENT)


def test_a_departure_that_no_longer_differs_is_named(tmp_path):
    # The eviction flags dropped from the master's command: their departure now explains nothing.
    def change(data):
        data["mooncake"]["master"]["command"] = ["mooncake_master", "--rpc_port=50088", "--default_kv_lease_ttl=15000"]
    v = verdict(_seed_with(tmp_path, change), "seed.md")
    assert v.unexplained == []
    assert v.stale == ["master --eviction_high_watermark_ratio", "master --eviction_ratio"]
    assert "lists the departure 'master --eviction_ratio', but it no longer differs" in v.problems("the target")[-1]


def test_a_departure_with_no_reason_is_a_config_error(tmp_path):
    def no_reason(data):
        del data["departures"][0]["reason"]

    def blank_reason(data):
        data["departures"][1]["reason"] = "  "

    with pytest.raises(ConfigError) as e:
        load_target(_seed_with(tmp_path, no_reason))
    assert e.value.problems == [("departures[0].reason", "required; add it")]
    with pytest.raises(ConfigError) as e:
        load_target(_seed_with(tmp_path, blank_reason))
    [(field, message)] = e.value.problems
    assert field == "departures[1].reason" and "say why the target departs from its guide" in message
