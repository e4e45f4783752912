from __future__ import annotations

# The suite's fixture plugins. fixtures/target.py (--target, markers) is an installed pytest plugin
# (pyproject.toml, pytest11) so that --target is parsed before pytest chooses its rootdir.
# fixtures.events first: fixtures.deployment imports it, and a plugin imported before pytest registers it keeps
# its plain asserts (a warning on every run).
pytest_plugins = ["fixtures.events", "fixtures.deployment", "fixtures.hosts"]
