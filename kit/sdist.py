"""Fetch a release that PyPI has only as an sdist (vllm-ascend 0.23.0.post1) into the wheelhouse, without pip.

`pip download` of an sdist builds its metadata, and vllm-ascend's build needs NPU packages (torch-npu,
triton-ascend): here the sdist file itself is all we want, since the Dockerfile only unpacks the pool
connector's sources from it. So the file is taken from the project JSON (https://pypi.org/pypi/NAME/json,
releases[VERSION]) and checked against the sha256 that JSON gives.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


class SdistError(RuntimeError):
    pass


def split_pin(pin: str) -> tuple[str, str]:
    """'vllm-ascend==0.23.0.post1' -> ('vllm-ascend', '0.23.0.post1'); only exact pins name one file."""
    name, sep, version = pin.partition("==")
    if not sep or not name or not version:
        raise SdistError(f"{pin!r} is not an exact pin NAME==VERSION")
    return name.strip(), version.strip()


def sdist_only(project: dict, version: str) -> dict | None:
    """The release's sdist entry when PyPI has no wheel of it at all (else pip downloads the wheel)."""
    files = project.get("releases", {}).get(version)
    if not files:
        raise SdistError(f"PyPI lists no files for release {version} of {project.get('info', {}).get('name')}")
    if any(f.get("packagetype") == "bdist_wheel" for f in files):
        return None
    sdists = [f for f in files if f.get("packagetype") == "sdist"]
    if len(sdists) != 1:
        raise SdistError(f"release {version} has {len(sdists)} sdists and no wheel")
    return sdists[0]


def sdist_url(json_url: str, entry: dict) -> str:
    """The file's URL: PyPI gives it absolute, a mirror may give it relative to the JSON
    ('../../packages/packages/ab/7a/.../vllm_ascend-0.23.0.post1.tar.gz'), which resolves against the JSON's URL."""
    return urljoin(json_url, entry["url"])


def checked(data: bytes, entry: dict, url: str) -> bytes:
    want = entry.get("digests", {}).get("sha256")
    if not want:
        raise SdistError(f"the project JSON gives no sha256 for {url}; refusing an unchecked file")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise SdistError(f"{url}: sha256 {got} differs from the project JSON's {want}")
    return data


def _ssl_context() -> ssl.SSLContext:
    """The machine's CA bundle, as pip and requests would use it (a TLS-inspecting proxy signs with it)."""
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        if os.environ.get(var):
            return ssl.create_default_context(cafile=os.environ[var])
    return ssl.create_default_context()


def _get(url: str, timeout_s: float = 180) -> bytes:
    # urllib's default opener reads HTTPS_PROXY/NO_PROXY from the environment.
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=_ssl_context()) as r:
            return r.read()
    except OSError as e:  # URLError, HTTPError, timeouts
        raise SdistError(f"could not download {url}: {e}") from None


def fetch_sdist(pin: str, folder: Path, get=_get) -> Path | None:
    """Put the pinned release's sdist into folder (checked, written whole or not at all) and return its path;
    None when the release has a wheel, which pip downloads instead."""
    name, version = split_pin(pin)
    json_url = PROJECT_JSON.format(name=name)
    try:
        project = json.loads(get(json_url))
    except ValueError as e:
        raise SdistError(f"{json_url} is not JSON: {e}") from None
    entry = sdist_only(project, version)
    if entry is None:
        return None
    filename = entry.get("filename", "")
    if not filename or Path(filename).name != filename:
        raise SdistError(f"{json_url}: release {version}'s sdist has no plain file name ({filename!r})")
    target = folder / filename
    url = sdist_url(json_url, entry)
    if target.is_file():  # from an earlier download: kept only if it is still the release's file
        try:
            checked(target.read_bytes(), entry, str(target))
            return target
        except SdistError:
            target.unlink()
    data = checked(get(url), entry, url)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)  # atomic: a build never sees half a file
    return target
