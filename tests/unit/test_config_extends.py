"""A target that extends another: only what differs is written, the rest is the base's."""

from __future__ import annotations

import pytest
import yaml

from harness.config import ConfigError, load_target, overlay


def test_overlay_merges_mappings_and_instances_item_by_item():
    base = {"a": {"x": 1, "y": [1, 2]}, "instances": [{"name": "i1", "env": {"A": "1"}}, {"name": "i2"}]}
    over = {"a": {"y": [3]}, "instances": [{"env": {"B": "2"}}, {}], "new": 5}
    assert overlay(base, over) == {"a": {"x": 1, "y": [3]}, "new": 5,
                                   "instances": [{"name": "i1", "env": {"A": "1", "B": "2"}}, {"name": "i2"}]}
    different_length = {"instances": [{"n": 2}, {"n": 3}]}
    assert overlay({"instances": [{"n": 1}]}, different_length) == different_length


def test_seed_mooncake_target_is_cpu_local_with_the_seed_mooncake():
    base, seed = load_target("cpu-local"), load_target("cpu-local-seed-mooncake")
    assert seed.mooncake.version == "0.3.7.post2" and base.mooncake.version is None
    assert seed.container.build_args == {"EXTRA_WHEELS": "mooncake-transfer-engine-non-cuda==0.3.7.post2"}
    assert "--metrics_host=127.0.0.1" not in seed.mooncake.master.command  # 0.3.7.post2 has no such flag
    assert seed.instances == base.instances and seed.benchmark == base.benchmark


def test_extends_must_name_another_target(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"extends": "no-such-target"}))
    with pytest.raises(ConfigError, match="extends"):
        load_target(path)
    path.write_text(yaml.safe_dump({"extends": "cpu-local", "thresholds": {"cross_instance_ttft_fraction": 2}}))
    with pytest.raises(ConfigError, match="thresholds.cross_instance_ttft_fraction"):
        load_target(path)
