"""`tox -e report` on a machine whose CA reaches npm only through the environment (a Jenkins agent behind a
TLS-inspecting proxy): Allure installs afresh with npm's global and user config hidden and an empty npm cache,
through a TLS-inspecting proxy of the test's own (tests/selftest/tls_proxy.py, a throwaway CA), with
NODE_EXTRA_CA_CERTS holding that CA only, and the report is built. Without that variable, the same install through
the same kind of proxy fails on the certificate, on every machine: the control cannot pass by accident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness.config import ROOT

from .tls_proxy import TlsProxy

pytestmark = pytest.mark.kit


def npm_registry_host() -> str:
    """The registry npm uses by default (its own built-in setting, the machine's npmrc files hidden)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("npm_config_")}
    with tempfile.TemporaryDirectory() as tmp:  # two distinct missing files: npm refuses one file loaded twice
        env |= {"npm_config_globalconfig": f"{tmp}/global", "npm_config_userconfig": f"{tmp}/user"}
        url = subprocess.run(["npm", "config", "get", "registry"], env=env, capture_output=True, text=True,
                             timeout=60).stdout.strip()
    host = urlsplit(url).hostname
    assert host, f"npm config get registry gave {url!r}"
    return host


def report_through_tox(tmp_path: Path, name: str, registry: str, proxy: TlsProxy, ca: Path | None, *,
                       fetch_retries: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().startswith("npm_config_") and k != "NODE_EXTRA_CA_CERTS"}
    env |= {"npm_config_globalconfig": str(tmp_path / "no-global-npmrc"),
            "npm_config_userconfig": str(tmp_path / "no-user-npmrc"),
            "npm_config_cache": str(tmp_path / f"npm-cache-{name}"),  # nothing cached: npm must download
            "npm_config_registry": f"https://{registry}/",  # the one host the proxy tunnels to
            "npm_config_https_proxy": proxy.url, "npm_config_proxy": proxy.url,
            # Not empty, and matching nothing: npm would otherwise take NO_PROXY, which could bypass the proxy.
            "npm_config_noproxy": "none.invalid",
            "KVPOOL_ALLURE_DIR": str(tmp_path / f"allure-{name}")}
    if ca:
        env["NODE_EXTRA_CA_CERTS"] = str(ca)
    if fetch_retries is not None:
        env["npm_config_fetch_retries"] = str(fetch_retries)
    out = tmp_path / f"report-{name}"
    return subprocess.run([sys.executable, "-m", "tox", "-e", "report", "--", "--results", str(tmp_path / "results"),
                           "--out", str(out), "--history", str(tmp_path / f"history-{name}")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_report_builds_through_tox_with_the_ca_from_the_environment_only(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    now = int(time.time() * 1000)
    (results / f"{uuid.uuid4()}-result.json").write_text(json.dumps(
        {"uuid": str(uuid.uuid4()), "name": "test_a", "fullName": "selftest#test_a", "status": "passed",
         "start": now, "stop": now + 5}))

    registry = npm_registry_host()
    # The negative control: npm trusts only Node's own roots, and the proxy's CA is none of them.
    with TlsProxy(allow={f"{registry}:443"}) as proxy:
        # One attempt: npm retries a failed request twice, 10 to 60 s apart (a minute here), and a certificate
        # does not heal on retry.
        without = report_through_tox(tmp_path, "without-ca", registry, proxy, None, fetch_retries=0)
    text = without.stdout + without.stderr
    assert without.returncode != 0, text[-3000:]
    # The proxy sends its CA after the leaf, as inspecting proxies do, so Node names a self-signed CA in the chain.
    assert "npm error code SELF_SIGNED_CERT_IN_CHAIN" in text, text[-3000:]
    assert "self-signed certificate in certificate chain" in text, text[-3000:]
    assert f"{registry}:443" in proxy.connects, (proxy.connects, proxy.refused, proxy.errors)
    assert any("client refused the re-signed certificate" in e for e in proxy.errors), proxy.errors
    assert not (tmp_path / "report-without-ca" / "index.html").exists()

    # NODE_EXTRA_CA_CERTS is the proxy's CA alone: Node adds it to its own roots, and nothing else signs what npm sees.
    with TlsProxy(allow={f"{registry}:443"}) as proxy:
        with_ca = report_through_tox(tmp_path, "with-ca", registry, proxy, proxy.ca_file)
    assert with_ca.returncode == 0, (with_ca.stdout + with_ca.stderr)[-3000:]
    assert (tmp_path / "report-with-ca" / "index.html").is_file()
    assert (tmp_path / "allure-with-ca" / "node_modules" / "allure-commandline").is_dir()
    assert f"{registry}:443" in proxy.connects, (proxy.connects, proxy.refused, proxy.errors)  # npm came through it
    assert proxy.refused == [], proxy.refused
