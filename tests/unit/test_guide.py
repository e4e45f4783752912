"""The normalizer (harness/guide.py) on the guides' real text: their exports, sources, comments, continued lines, quoted
JSON, and options read the same whatever their order, spelling or quoting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.departures import docker_run_keys, process_keys
from harness.guide import (
    DOCKER_RUN_SWITCHES,
    logical_lines,
    parse_options,
    parse_script,
    placeholder_match,
    read_transcription,
    split_redirects,
)

GUIDES = Path(__file__).parent / "recordings" / "guides"


def transcription(name: str):
    return read_transcription((GUIDES / name).read_text())


SEED = transcription("seed.md")
TWO_NODE = transcription("pd-colocated-mooncake-multi-instance.md")
KV_POOL = transcription("kv-pool-mooncake-pd-mixed.md")


def test_each_transcription_has_the_parts_of_a_deployment():
    for path in sorted(GUIDES.glob("*.md")):
        parts = list(read_transcription(path.read_text()))
        assert parts == ["container", "master", "mooncake.json", "instance-1", "instance-2"], path.name
    assert [b.node for b in TWO_NODE.values()] == ["each node", "<master_node>", "each node", "node1", "node2"]
    assert {b.node for b in SEED.values()} == {None}


def test_seed_instance_exports_sources_and_command():
    script = parse_script(SEED["instance-1"].text)
    assert script.sources == ["/usr/local/Ascend/ascend-toolkit/set_env.sh", "/usr/local/Ascend/nnal/atb/set_env.sh"]
    assert script.env == {
        "ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3",  # the tab and "#Deploy instance 1 ..." after it are a comment
        "LD_LIBRARY_PATH": "/usr/local/Ascend/ascend-toolkit/latest/python/site-packages:$LD_LIBRARY_PATH",
        "PYTHONPATH": "$PYTHONPATH:/vllm-workspace/vllm",  # an exported value keeps its $NAME: the launcher expands it
        "MOONCAKE_CONFIG_PATH": "/vllm-workspace/mooncake.json",  # quoted in the guide
        "ACL_OP_INIT_MODE": "1", "ASCEND_BUFFER_POOL": "4:8", "ASCEND_CONNECT_TIMEOUT": "10000",
        "ASCEND_TRANSFER_TIMEOUT": "10000",
    }
    [argv] = script.commands
    o = parse_options(argv)
    assert (o.program, o.arguments) == ("vllm serve", ["/model/Qwen2.5-72B-Instruct/"])
    assert o.options["--port"] == "8002" and o.options["--enforce-eager"] is True
    assert o.options["--kv-transfer-config"] == {  # the quoted multi-line JSON, parsed
        "kv_connector": "MooncakeConnectorStoreV1", "kv_role": "kv_both",
        "kv_connector_extra_config": {"use_layerwise": False, "mooncake_rpc_port": "0", "load_async": True,
                                      "register_buffer": True}}


def test_seed_instances_differ_in_devices_and_port_only():
    one, two = (process_keys(*_process(SEED[r].text)) for r in ("instance-1", "instance-2"))
    assert {k for k in one if one[k] != two.get(k)} == {"env ASCEND_RT_VISIBLE_DEVICES", "--port"}


def _process(text: str) -> tuple:
    s = parse_script(text)
    return s.commands[-1], s.env, s.sources, s.cwd or "", "c", None


def test_docker_run_of_the_seed():
    script = parse_script(SEED["container"].text)
    [argv] = script.commands
    assert argv[:2] == ["docker", "run"]
    assert script.env == {"IMAGE": "m.daocloud.io/quay.io/ascend/vllm-ascend:v0.11.0rc2", "NAME": "vllm-ascend"}
    keys = docker_run_keys(argv)
    assert keys["image"] == "m.daocloud.io/quay.io/ascend/vllm-ascend:v0.11.0rc2"  # $IMAGE expanded
    assert (keys["name"], keys["network"], keys["shm-size"], keys["command"]) == ("vllm-ascend", "host", "1g", ["bash"])
    assert keys["option --rm"] is True and keys["option -it"] is True  # -it is a switch: $IMAGE is not its value
    assert sorted(k for k in keys if k.startswith("device ")) == sorted(
        f"device /dev/{d}" for d in [*(f"davinci{i}" for i in range(8)), "davinci_manager", "devmm_svm", "hisi_hdc"])
    assert keys["volume /root/.cache"] == "/mnt/sfs_turbo/.cache:rw"
    # lib64/ as docker reads it
    assert keys["volume /usr/local/Ascend/driver/lib64"] == "/usr/local/Ascend/driver/lib64:rw"


def test_two_node_guide_continued_lines_join():
    keys = docker_run_keys(parse_script(TWO_NODE["container"].text).commands[0])
    # `-v /usr/local/Ascend/driver/tools/hccn_tool:\` + newline + `/usr/local/...`: one word, as in sh
    assert keys["volume /usr/local/Ascend/driver/tools/hccn_tool"] == "/usr/local/Ascend/driver/tools/hccn_tool:rw"
    assert len([k for k in keys if k.startswith("device ")]) == 7
    env = parse_script(TWO_NODE["instance-1"].text).env
    assert env["LD_LIBRARY_PATH"] == parse_script(SEED["instance-1"].text).env["LD_LIBRARY_PATH"]


def test_two_node_master_block():
    script = parse_script(TWO_NODE["master"].text)
    assert script.cwd == "/vllm-workspace/Mooncake"
    exec_, master = script.commands
    assert parse_options(exec_, DOCKER_RUN_SWITCHES, stop_at_argument=True).arguments == ["vllm-ascend", "bash"]
    assert parse_options(master).options == {"--port": "50088", "--eviction_high_watermark_ratio": "0.95",
                                             "--eviction_ratio": "0.05"}


# The seed's instance 1 written otherwise: exports and options in another order, --flag=VALUE, other quotes, the JSON
# on one line with its keys reordered.
REWRITTEN = """\
export ASCEND_TRANSFER_TIMEOUT="10000" ASCEND_CONNECT_TIMEOUT=10000
export ASCEND_BUFFER_POOL='4:8'
export ACL_OP_INIT_MODE=1 MOONCAKE_CONFIG_PATH=/vllm-workspace/mooncake.json
export PYTHONPATH='$PYTHONPATH:/vllm-workspace/vllm'
export LD_LIBRARY_PATH=/usr/local/Ascend/ascend-toolkit/latest/python/site-packages:$LD_LIBRARY_PATH
export ASCEND_RT_VISIBLE_DEVICES=0,1,2,3
. /usr/local/Ascend/ascend-toolkit/set_env.sh
source "/usr/local/Ascend/nnal/atb/set_env.sh"
vllm serve "/model/Qwen2.5-72B-Instruct/" --kv-transfer-config '{"kv_role": "kv_both", "kv_connector_extra_config": \
  {"register_buffer": true, "load_async": true, "mooncake_rpc_port": "0", "use_layerwise": false}, \
  "kv_connector": "MooncakeConnectorStoreV1"}' --port=8002 --host "90.90.135.188" --gpu-memory-utilization=0.9 \
  --enable-prefix-caching --enforce-eager --block-size '128' --max-num-batched-tokens 4096 \
  --tensor-parallel-size=4 --max-model-len "25600" --dtype bfloat16 --served-model-name=qwen
"""


def test_order_quoting_and_spelling_do_not_matter():
    assert process_keys(*_process(REWRITTEN)) == process_keys(*_process(SEED["instance-1"].text))
    changed = process_keys(*_process(REWRITTEN.replace("--block-size '128'", "--block-size=256")))
    assert {k for k in changed if changed[k] != process_keys(*_process(REWRITTEN))[k]} == {"--block-size"}


def test_mooncake_json_blocks_are_json():
    assert json.loads(SEED["mooncake.json"].text)["local_hostname"] == "90.90.135.188"
    assert json.loads(TWO_NODE["mooncake.json"].text)["master_server_address"] == "<your_server_ip>:50088"
    assert json.loads(KV_POOL["mooncake.json"].text)["global_segment_size"] == "1GB"


def test_redirections_are_the_commands():
    assert split_redirects(["python3", "-m", "x", "--port", "8100", ">", "mix.log", "2>&1"]) == (
        ["python3", "-m", "x", "--port", "8100"], ["> mix.log", "2>&1"])
    assert split_redirects(["a", ">>log", "2>", "err", "&>", "all"]) == (["a"], [">>log", "2> err", "&> all"])
    words = ["a", "b>c", '{"k": ">"}']  # a `>` not at a word's start is no redirection
    assert split_redirects(words) == (words, [])
    script = parse_script(KV_POOL["instance-1"].text)  # pd_mix.sh: the JSON, then `> mix.log 2>&1`
    [argv], [redirects] = script.commands, script.redirects
    o = parse_options(argv)
    assert (o.program, o.arguments, o.options["-m"]) == ("python3", [], "vllm.entrypoints.openai.api_server")
    assert o.options["--kv-transfer-config"]["kv_connector_extra_config"] == {"lookup_rpc_port": "1",
                                                                              "backend": "mooncake"}
    assert redirects == ["> mix.log", "2>&1"]
    assert parse_script(SEED["instance-1"].text).redirects == [[]]


def test_kv_pool_guide_blocks():
    # The tutorial's MyST block: its `:substitutions:` line is a command of no consequence, the docker run is read.
    script = parse_script(KV_POOL["container"].text)
    keys = docker_run_keys(next(c for c in script.commands if c[:2] == ["docker", "run"]))
    assert keys["image"] == "m.daocloud.io/quay.io/ascend/vllm-ascend:|vllm_ascend_version|"
    assert len([k for k in keys if k.startswith("device ")]) == 11
    assert keys["volume /etc/hccn.conf"] == "/etc/hccn.conf:rw"
    env = parse_script(KV_POOL["instance-1"].text).env  # the A3 line is set, the A2 one a comment
    assert env["PYTHONHASHSEED"] == "0" and env["ASCEND_ENABLE_USE_FABRIC_MEM"] == "1"
    assert "HCCL_INTRA_ROCE_ENABLE" not in env and "ASCEND_GLOBAL_RESOURCE_CONFIG" not in env
    assert KV_POOL["instance-2"].text == KV_POOL["instance-1"].text  # the guide writes one PD-mixed instance


def test_placeholders():
    assert placeholder_match("<ip>:50088", "90.90.100.188:50088") == {"<ip>": "90.90.100.188"}
    assert placeholder_match("<ip>:50088", "90.90.100.188:50089") is None
    assert placeholder_match("<a>/<a>", "x/y") is None  # one placeholder, one value
    assert placeholder_match("<a>/<a>", "x/x") == {"<a>": "x"}
    assert placeholder_match(["<m>/Q/"], ["/model/Q/"]) == {"<m>": "/model"}
    assert placeholder_match("plain", "plain") is None  # no placeholder: compared as it is


def test_shell_it_does_not_read_is_an_error():
    with pytest.raises(ValueError, match="unterminated quote"):
        logical_lines("vllm serve m --kv-transfer-config '{\n")
    with pytest.raises(ValueError, match="no fenced block"):
        read_transcription("## master\n\nno block here\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_transcription("## master\n```\na\n```\n## master\n```\nb\n```\n")
