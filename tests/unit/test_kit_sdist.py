"""The kit fetches an sdist-only release (vllm-ascend 0.23.0.post1) from PyPI's project JSON, checked by sha256.

The JSON is recordings/pypi/vllm-ascend-project.json: https://pypi.org/pypi/vllm-ascend/json as this machine's
PyPI answered it on 2026-12-03 (curl), trimmed to three releases (see recordings/README.md). No network here:
`get` is replaced by the recording and by bytes made in the test.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from kit import build
from kit.sdist import PROJECT_JSON, SdistError, fetch_sdist, sdist_only, sdist_url, split_pin

RECORDED = json.loads((Path(__file__).parent / "recordings" / "pypi" / "vllm-ascend-project.json").read_text())
JSON_URL = PROJECT_JSON.format(name="vllm-ascend")


def serve(project: dict, files: dict[str, bytes], asked: list[str] | None = None):
    def get(url: str) -> bytes:
        if asked is not None:
            asked.append(url)
        if url == JSON_URL:
            return json.dumps(project).encode()
        return files[url]
    return get


def test_an_sdist_only_release_gives_its_sdist_and_its_relative_url_resolves_against_the_json():
    entry = sdist_only(RECORDED, "0.23.0.post1")
    assert entry is not None and entry["filename"] == "vllm_ascend-0.23.0.post1.tar.gz"
    assert entry["url"].startswith("../../")  # as this PyPI gives it
    assert sdist_url(JSON_URL, entry) == ("https://pypi.org/packages/packages/ab/7a/32a1b1f13467fb7372588206fa1ffb"
                                          "735f28dcd8504d562f5c7ccdbd90d0/vllm_ascend-0.23.0.post1.tar.gz")
    absolute = {**entry, "url": "https://files.pythonhosted.org/packages/ab/7a/x/vllm_ascend-0.23.0.post1.tar.gz"}
    assert sdist_url(JSON_URL, absolute) == absolute["url"]  # pypi.org's own answer: kept as it is


@pytest.mark.parametrize("version", ["0.11.0rc2", "0.23.0"])
def test_a_release_with_wheels_is_left_to_pip(version):
    # Both have an sdist too (the recording lists it): the wheel wins, as the seed's image always had it.
    assert any(f["packagetype"] == "sdist" for f in RECORDED["releases"][version])
    assert sdist_only(RECORDED, version) is None


def test_a_release_pypi_does_not_list_and_a_loose_pin_are_errors():
    with pytest.raises(SdistError, match="no files for release 0.23.1 of vllm-ascend"):
        sdist_only(RECORDED, "0.23.1")
    with pytest.raises(SdistError, match="not an exact pin"):
        split_pin("vllm-ascend>=0.23")
    assert split_pin("vllm-ascend==0.23.0.post1") == ("vllm-ascend", "0.23.0.post1")


def test_the_file_is_written_when_its_sha256_is_the_jsons(tmp_path):
    data = b"an sdist made in the test"
    project = copy.deepcopy(RECORDED)
    entry = project["releases"]["0.23.0.post1"][0]
    entry["digests"]["sha256"] = hashlib.sha256(data).hexdigest()
    asked: list[str] = []
    path = fetch_sdist("vllm-ascend==0.23.0.post1", tmp_path, get=serve(project, {sdist_url(JSON_URL, entry): data},
                                                                           asked))
    assert path == tmp_path / "vllm_ascend-0.23.0.post1.tar.gz" and path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no .part left
    asked.clear()
    assert fetch_sdist("vllm-ascend==0.23.0.post1", tmp_path, get=serve(project, {}, asked)) == path
    assert asked == [JSON_URL]  # already there and still the release's file: not downloaded again


def test_bytes_that_are_not_the_release_are_refused_and_nothing_is_written(tmp_path):
    entry = RECORDED["releases"]["0.23.0.post1"][0]
    url = sdist_url(JSON_URL, entry)
    with pytest.raises(SdistError) as e:
        fetch_sdist("vllm-ascend==0.23.0.post1", tmp_path, get=serve(RECORDED, {url: b"not the release"}))
    assert url in str(e.value) and entry["digests"]["sha256"] in str(e.value)
    assert list(tmp_path.iterdir()) == []
    # a file left by an earlier run that is not the release is replaced, not trusted
    stale = tmp_path / entry["filename"]
    stale.write_bytes(b"stale")
    with pytest.raises(SdistError, match="differs from the project JSON"):
        fetch_sdist("vllm-ascend==0.23.0.post1", tmp_path, get=serve(RECORDED, {url: b"still not it"}))
    assert not stale.exists()


def test_a_release_with_wheels_fetches_nothing(tmp_path):
    asked: list[str] = []
    assert fetch_sdist("vllm-ascend==0.11.0rc2", tmp_path, get=serve(RECORDED, {}, asked)) is None
    assert asked == [JSON_URL] and list(tmp_path.iterdir()) == []


def test_the_wheelhouse_leaves_an_sdist_only_connector_out_of_pip_and_names_the_pin_on_failure(tmp_path, monkeypatch):
    recipe = tmp_path / "recipe"
    (recipe / "locks").mkdir(parents=True)
    (recipe / "locks" / "vllm-0.23.0.lock").write_text("numpy==2.3.0\n")
    monkeypatch.setattr(build, "CACHE", tmp_path / "cache")
    calls: list[list[str]] = []
    monkeypatch.setattr(build, "run_streamed", lambda argv, label, **kw: calls.append(argv))
    sdist_releases = {"vllm-ascend==0.23.0.post1"}

    def fetch(pin, folder):
        return folder / "x.tar.gz" if pin in sdist_releases else None

    monkeypatch.setattr(build, "fetch_sdist", fetch)
    pins = ["mooncake-transfer-engine-non-cuda==0.3.11.post1", "vllm-ascend==0.23.0.post1"]
    build.ensure_wheelhouse(recipe, "0.23.0", pins, sdist_ok=("vllm-ascend==0.23.0.post1",))
    assert calls[-1][-1] == "mooncake-transfer-engine-non-cuda==0.3.11.post1"
    assert "vllm-ascend==0.23.0.post1" not in calls[-1]
    # the seed's connector has wheels: pip downloads it as before
    build.ensure_wheelhouse(recipe, "0.23.0", ["vllm-ascend==0.11.0rc2"], sdist_ok=("vllm-ascend==0.11.0rc2",))
    assert calls[-1][-1] == "vllm-ascend==0.11.0rc2"

    def broken(pin, folder):
        raise SdistError("could not download https://pypi.org/pypi/vllm-ascend/json: timed out")

    monkeypatch.setattr(build, "fetch_sdist", broken)
    pin = "vllm-ascend==0.23.0.post2"
    with pytest.raises(build.KitError, match=r"vllm-ascend==0.23.0.post2: could not download https://pypi.org/"):
        build.ensure_wheelhouse(recipe, "0.23.0", [pin], sdist_ok=(pin,))
