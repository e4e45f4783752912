"""`tox -e report` on a machine whose CA reaches npm only through the environment (a Jenkins agent behind a
TLS-inspecting proxy): Allure installs afresh with npm's global and user config hidden and an empty npm cache,
NODE_EXTRA_CA_CERTS being the only CA, and the report is built. Without that variable, the same install must
fail on the certificate, wherever the proxy re-signs TLS (as here); elsewhere it needs no CA and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness.config import ROOT

pytestmark = pytest.mark.kit
CA = os.environ.get("NODE_EXTRA_CA_CERTS") or "/etc/ssl/certs/ca-certificates.crt"


def report_through_tox(tmp_path: Path, name: str, ca: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.lower().startswith("npm_config_") and k != "NODE_EXTRA_CA_CERTS"}
    env |= {"npm_config_globalconfig": str(tmp_path / "no-global-npmrc"),
            "npm_config_userconfig": str(tmp_path / "no-user-npmrc"),
            "npm_config_cache": str(tmp_path / f"npm-cache-{name}"),  # nothing cached: npm must download
            "KVPOOL_ALLURE_DIR": str(tmp_path / f"allure-{name}")}
    if ca:
        env["NODE_EXTRA_CA_CERTS"] = ca
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

    without = report_through_tox(tmp_path, "without-ca", None)
    text = without.stdout + without.stderr
    if without.returncode != 0:
        assert any(k in text for k in ("SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT", "certificate")), \
            text[-3000:]
    else:
        print("this machine's npm registry needs no extra CA: the negative control shows nothing here")

    with_ca = report_through_tox(tmp_path, "with-ca", CA)
    assert with_ca.returncode == 0, (with_ca.stdout + with_ca.stderr)[-3000:]
    assert (tmp_path / "report-with-ca" / "index.html").is_file()
    assert (tmp_path / "allure-with-ca" / "node_modules" / "allure-commandline").is_dir()
