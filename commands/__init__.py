"""The commands people run: `python -m commands.<name>` (or their tox env), above the library (harness/) and the kit
(kit/), which they both may use; neither of those imports this package (tests/unit/test_layers.py).

    preflight  the host checked for a target before anything starts
    repeat     verdict truth: N acceptance runs per kernel path (tox -e repeat)
    fidelity   our TTFT client against aisbench, vllm bench serve and the server histogram (tox -e fidelity)
    report     the offline Allure report of a run (tox -e report)
    run_plan   what a run does, action by action (`pytest --plan`, with plan_render)
"""
