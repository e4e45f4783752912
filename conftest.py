from __future__ import annotations

# The suite's fixture plugins. fixtures/target.py (--target, markers) is an installed pytest plugin
# (pyproject.toml, pytest11) so that --target is parsed before pytest chooses its rootdir.
pytest_plugins = ["fixtures.deployment", "fixtures.hosts"]
