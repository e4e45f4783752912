"""The seed builds Mooncake inside its container ("Install Mooncake"); the suite gives the site that step as an image
derived from the target's (targets/atlas/mooncake). Its build needs GitHub and an Atlas; here: the recipe holds the
seed's commands, and the build is rendered from the target and tagged by its inputs."""

from __future__ import annotations

import shutil

from harness.config import ROOT, load_target
from kit import build

BASE_ID = "sha256:" + "1" * 64


def test_the_recipe_runs_the_seeds_install_mooncake_commands():
    # The seed guide, "## Install Mooncake": its clone, mpi, dependencies, cmake, make and check lines.
    seed = ["git clone -b", "https://github.com/kvcache-ai/Mooncake.git", "apt-get install", "mpich libmpich-dev",
            "bash dependencies.sh -y", "cmake .. -DUSE_ASCEND_DIRECT=ON", "make install",
            'python -c "import mooncake; print(mooncake.__file__)"']
    recipe = (ROOT / "targets/atlas/mooncake/Dockerfile").read_text()
    assert [s for s in seed if s not in recipe] == []
    assert 'git clone -b "v${MOONCAKE_VERSION}"' in recipe  # the target's version, as the seed's v0.3.7.post2


def test_the_atlas_target_derives_its_image_and_the_build_is_rendered_from_it():
    t = load_target("atlas-800t-a2")
    argv = build.derive_argv(t, BASE_ID)
    assert argv[:2] == ["docker", "build"]
    assert "BASE=m.daocloud.io/quay.io/ascend/vllm-ascend:v0.11.0rc2" in argv
    assert "MOONCAKE_VERSION=0.3.7.post2" in argv
    assert argv[-1] == str(ROOT / "targets/atlas/mooncake")
    assert argv[argv.index("--tag") + 1] == build.derived_tag(t, BASE_ID)
    assert build.derived_tag(t, BASE_ID).startswith("kvpool-mooncake:")


def test_the_tag_changes_with_each_input(tmp_path):
    t = load_target("atlas-800t-a2")
    first = build.derived_tag(t, BASE_ID)
    assert build.derived_tag(t, "sha256:" + "2" * 64) != first  # another base image
    newer = t.model_copy(update={"mooncake": t.mooncake.model_copy(update={"version": "0.3.8"})})
    assert build.derived_tag(newer, BASE_ID) != first  # another Mooncake
    recipe = tmp_path / "mooncake"
    shutil.copytree(ROOT / "targets/atlas/mooncake", recipe)
    moved = t.model_copy(update={"container": t.container.model_copy(update={"derive": str(recipe)})})
    assert build.derived_tag(moved, BASE_ID) == first  # the same files elsewhere: the same image
    with (recipe / "Dockerfile").open("a") as f:
        f.write("# changed\n")
    assert build.derived_tag(moved, BASE_ID) != first  # a changed recipe
