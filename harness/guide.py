"""A deployment guide's shell text, read into comparable data: the exported environment, the sourced scripts, the
folder `cd` went to, and each command's argv; an argv's options as a map regardless of their order and of how they
are quoted or spelled (`--port 8002`, `--port=8002`, `--port "8002"`), with JSON values parsed. Also the guides'
transcriptions (tests/unit/recordings/guides/): the guide's own blocks under `## role` headings.

Shell as the guides write it, not all of sh: a backslash-newline joins lines (inside single quotes too, where sh
keeps it: no guide has one there), `#` outside quotes starts a comment (sh: only at a word's start; no guide has one
inside a word), a command spans lines while a quote is open, `$NAME` in a command (never in an exported value)
expands from what the same text set before it, and output redirections (`> mix.log 2>&1`) are the command's, not
arguments of its program (a quoted `>` would read as one too: no guide has one). No pipes, `&&` or loops.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# Options of `docker run` that take no value (so the word after them is not theirs).
DOCKER_RUN_SWITCHES = frozenset({"--rm", "-d", "--detach", "-i", "--interactive", "-t", "--tty", "-it", "-ti",
                                 "--init", "--privileged", "--read-only"})
# How many words name the program: `vllm serve MODEL` is the program `vllm serve` with one argument.
PROGRAM_WORDS = {"vllm": 2, "docker": 2}
PLACEHOLDER = re.compile(r"<[A-Za-z_][\w.-]*>")  # the guides' <your_server_ip>, <path_to_your_model>
# An output redirection's operator, with its target when attached (`2>&1`, `>log`): `>`, `>>`, `2>`, `&>`.
REDIRECT = re.compile(r"(\d*|&)>>?(.*)", re.S)


@dataclass
class Script:
    """One block of shell: what it exports, sources and cd's to, the commands it runs (argv each) and each command's
    output redirections (`["> mix.log", "2>&1"]`, none: `[]`), in the same order."""

    env: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    cwd: str | None = None
    commands: list[list[str]] = field(default_factory=list)
    redirects: list[list[str]] = field(default_factory=list)


@dataclass
class Options:
    """An argv as its program, its positional arguments and its options (a value, True for a switch, or a list of
    values for an option given more than once)."""

    program: str
    arguments: list[str]
    options: dict[str, Any]


def logical_lines(text: str) -> list[str]:
    """The text's commands, one string each: backslash-newlines joined, a line continued while a quote is open."""
    out, pending = [], ""
    for line in text.replace("\\\n", "").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if pending.strip():
            out.append(pending)
        pending = ""
    if pending.strip():
        raise ValueError(f"unterminated quote in: {pending[:200]!r}")
    return out


def _expand(word: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), word)


def split_redirects(words: list[str]) -> tuple[list[str], list[str]]:
    """A command's words as its argv and its output redirections, each one operator and target (`> mix.log`)."""
    argv: list[str] = []
    redirects: list[str] = []
    i = 0
    while i < len(words):
        m = REDIRECT.fullmatch(words[i])
        if m is None:
            argv.append(words[i])
        elif m.group(2) or i + 1 == len(words):
            redirects.append(words[i])
        else:
            redirects.append(f"{words[i]} {words[i + 1]}")
            i += 1
        i += 1
    return argv, redirects


def parse_script(text: str) -> Script:
    """A block of shell as data (see the module's note for what of sh it reads)."""
    script = Script()
    for line in logical_lines(text):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        head, rest = words[0], words[1:]
        if head == "export" or (re.fullmatch(r"\w+=.*", head, re.S) and not rest):
            for assignment in rest if head == "export" else [head]:
                name, _, value = assignment.partition("=")
                script.env[name] = value
        elif head in ("source", "."):
            script.sources += rest[:1]
        elif head == "cd":
            script.cwd = rest[0] if rest else None
        else:
            argv, redirects = split_redirects([_expand(w, script.env) for w in words])
            script.commands.append(argv)
            script.redirects.append(redirects)
    return script


def _value(text: str) -> Any:
    """An option's value: JSON parsed when it is a JSON object or list, else the text as it is."""
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def parse_options(argv: list[str], switches: frozenset[str] = frozenset(), stop_at_argument: bool = False) -> Options:
    """argv's options as a map: `--flag=V` and `--flag V` alike; an option followed by another option, by nothing, or
    named in `switches` is a switch (True). `stop_at_argument`: the first positional argument ends the options and
    everything after it is an argument (`docker run [options] IMAGE COMMAND...`)."""
    n = PROGRAM_WORDS.get(argv[0], 1) if argv else 0
    program, words = " ".join(argv[:n]), argv[n:]
    arguments: list[str] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-") or word == "-":
            if stop_at_argument:
                arguments += words[i:]
                break
            arguments.append(word)
            i += 1
            continue
        name, eq, value = word.partition("=")
        if eq:
            given: Any = _value(value)
        elif name not in switches and i + 1 < len(words) and not words[i + 1].startswith("-"):
            given, i = _value(words[i + 1]), i + 1
        else:
            given = True
        if name in options:
            options[name] = [*options[name], given] if isinstance(options[name], list) else [options[name], given]
        else:
            options[name] = given
        i += 1
    return Options(program, arguments, options)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """A JSON object as dotted keys (`--kv-transfer-config.kv_connector_extra_config.use_layerwise`); anything else
    as one key."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


@dataclass
class Block:
    role: str  # container, master, mooncake.json, instance-1, ...
    node: str | None  # the heading's "(node2)", "(each node)", "(<a placeholder>)"; None: not said
    text: str


def read_transcription(text: str) -> dict[str, Block]:
    """A guide's transcription: under each `## role` or `## role (node)` heading, the first fenced block is the
    guide's text for that part of the deployment. Everything else is notes for people (the source, the section)."""
    blocks: dict[str, Block] = {}
    for m in re.finditer(r"(?m)^## (\S+)(?: \(([^)\n]+)\))?[^\n]*\n(.*?)(?=^## |\Z)", text, re.S):
        role, node, body = m.group(1), m.group(2), m.group(3)
        fence = re.search(r"(?ms)^(```+)[^\n]*\n(.*?)^\1\s*$", body)
        if fence is None:
            raise ValueError(f"transcription section {role!r} has no fenced block")
        if role in blocks:
            raise ValueError(f"transcription section {role!r} appears twice")
        blocks[role] = Block(role, node, fence.group(2))
    return blocks


def placeholder_match(guide_value: Any, value: Any) -> dict[str, str] | None:
    """When the guide's value has placeholders (`<your_server_ip>:50088`), what each stands for in `value`
    (`{"<your_server_ip>": "90.90.100.188"}`); None when it has none or `value` does not fit it. Lists of the same
    length match item by item."""
    if isinstance(guide_value, list) and isinstance(value, list) and len(guide_value) == len(value):
        found: dict[str, str] = {}
        for g, v in zip(guide_value, value):
            if g == v:
                continue
            bound = placeholder_match(g, v)
            if bound is None or any(found.get(k, x) != x for k, x in bound.items()):
                return None
            found.update(bound)
        return found or None
    if not isinstance(guide_value, str) or not isinstance(value, str) or not PLACEHOLDER.search(guide_value):
        return None
    names: list[str] = []
    pattern = ""
    for part in re.split(f"({PLACEHOLDER.pattern})", guide_value):
        if PLACEHOLDER.fullmatch(part):
            if part in names:
                pattern += f"(?P=p{names.index(part)})"
            else:
                pattern += f"(?P<p{len(names)}>.+?)"
                names.append(part)
        else:
            pattern += re.escape(part)
    m = re.fullmatch(pattern, value, re.S)
    return {name: m.group(f"p{i}") for i, name in enumerate(names)} if m else None
