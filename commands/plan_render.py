"""A run's plan (commands/run_plan.py) as an annotated shell script a person can read, and run by hand from the
repository's folder, or as JSON. Every command is quoted with shlex; a file's content is a heredoc;
the long scripts the commands pass as arguments are read once into variables, before the first command that uses
them."""

from __future__ import annotations

import json
import shlex
import textwrap
from dataclasses import asdict
from typing import Any

from commands.run_plan import Action, Command, Request, RunPlan

WIDTH = 118  # a longer command is broken at its options, one per line


def _delimiter(text: str) -> str:
    word = "KVPOOL_EOF"
    while word in text.splitlines():
        word += "_"
    return word


class _Quoter:
    """shlex.quote, except that the plan's variables and scripts stay shell references ("$KVPOOL_RUN_DIR/logs")."""

    def __init__(self, plan: RunPlan):
        self.inside = [(script["text"], name) for name, script in plan.scripts.items()]
        self.inside += [(f"${name}", name) for name in plan.variables]
        image = plan.variables["KVPOOL_IMAGE"]["value"]
        self.exact = {image: "KVPOOL_IMAGE"} if image else {}

    def __call__(self, token: str) -> str:
        if token in self.exact:
            return f'"${self.exact[token]}"'
        for text, name in self.inside:
            if text in token:
                return f'"${name}"'.join(self(piece) if piece else "" for piece in token.split(text))
        return shlex.quote(token)


def _command(c: Command, q: _Quoter) -> str:
    lines = [" ".join(q(t) for t in line) for line in c.lines if line]
    text = " ".join(lines)
    if len(text) > WIDTH:
        text = " \\\n    ".join(lines)
    if c.output is not None:
        text += f" > {q(c.output)} 2>&1"
    if c.assign is not None:
        return f"{c.assign}=$({text} | tail -n 1)"
    if c.stdin is None:
        return text
    if not c.stdin.endswith("\n"):  # a heredoc always ends with one
        return f"printf %s {shlex.quote(c.stdin)} | {text}"
    end = _delimiter(c.stdin)
    return f"{text} <<'{end}'\n{c.stdin}{end}"


def _curl(r: Request, q: _Quoter) -> str:
    argv = ["curl", "-sS"] + (["-N"] if (r.body or {}).get("stream") else [])
    if r.method != "GET":
        argv += ["-X", r.method] if r.body is None else ["-H", "Content-Type: application/json",
                                                         "-d", json.dumps(r.body)]
    return " ".join(q(t) for t in [*argv, r.url])


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"# {indent}", subsequent_indent=f"# {indent}  ",
                         break_long_words=False, break_on_hyphens=False) or ["#"]


def _action(a: Action, q: _Quoter) -> list[str]:
    where = "this host" if a.where == "host" else a.where
    out = _comment(f"[{where}] {'would check: ' if a.check else ''}{a.what}")
    for note in a.notes:
        out += [c for line in note.splitlines() for c in _comment(line, "  ")]
    out += [_command(c, q) for c in a.commands]
    if a.request is not None:
        out.append(_curl(a.request, q))
    return out


def _script(name: str, script: dict[str, str]) -> list[str]:
    """The script read into a variable exactly (read -d '': up to the end mark, newlines and all)."""
    text, end = script["text"], _delimiter(script["text"])
    out = [*_comment(f"{name}: {script['means']}"), f"IFS= read -r -d '' {name} <<'{end}' || true"]
    if text.endswith("\n"):
        return out + [text + end]
    return out + [f"{text}\n{end}", f"{name}=${{{name}%$'\\n'}}  # without the newline its end mark needs"]


def shell(plan: RunPlan) -> str:
    q = _Quoter(plan)
    opts = "".join(f" --{k.replace('_', '-')}" for k in ("attach", "keep_deployment") if plan.options[k])
    head = (f"The plan of `pytest -m acceptance --target {plan.source}{opts}` ({plan.target}, load generator "
            f"{plan.options['client']}), printed by "
            "--plan: every action the run takes, in order, from the descriptions the run executes (harness/plan.py) "
            "and the commands its checks run. Nothing has run. Read it, or run it piece by piece from the "
            "repository's folder: the suite waits for readiness and judges each answer where this script only sends "
            "the command; the HTTP requests it sends from Python are shown as curl.")
    out = ["#!/usr/bin/env bash", *_comment(head), ""]
    for name, v in plan.variables.items():
        if v["shell"] is not None:
            out += [*_comment(v["means"]), f"{name}={v['shell']}", f'mkdir -p "${name}/logs"']
    defined: set[str] = set()
    for i, section in enumerate(plan.sections, 1):
        out += ["", f"# ==== {i}. {section.title} " + "=" * max(4, 100 - len(section.title))]
        for a in section.actions:
            used = [n for n, script in plan.scripts.items() if n not in defined
                    and any(script["text"] in t for c in a.commands for t in c.argv)]
            for name in used:
                out += _script(name, plan.scripts[name])
                defined.add(name)
            out += _action(a, q)
    return "\n".join(out) + "\n"


def as_json(plan: RunPlan) -> str:
    """The plan as JSON: the deployment's descriptions as they are (harness/plan.py) and every action in order."""
    def action(a: Action) -> dict[str, Any]:
        out: dict[str, Any] = {"what": a.what, "where": a.where}
        if a.commands:
            out["commands"] = [{k: v for k, v in {"argv": c.argv, "stdin": c.stdin, "output": c.output,
                                                  "assign": c.assign}.items() if v is not None} for c in a.commands]
        if a.request is not None:
            out["request"] = {k: v for k, v in asdict(a.request).items() if v is not None}
        if a.notes:
            out["notes"] = a.notes
        if a.check:
            out["check"] = True
        return out

    return json.dumps({"target": plan.target, "source": plan.source, "options": plan.options,
                       "variables": plan.variables, "scripts": plan.scripts, "deployment": asdict(plan.deployment),
                       "sections": [{"title": s.title, "actions": [action(a) for a in s.actions]}
                                    for s in plan.sections]}, indent=1) + "\n"
