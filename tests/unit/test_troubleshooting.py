"""docs/troubleshooting.md keys every failure message the suite raises by its first words: each message built in the
code (DeploymentError, KitError, ClientError and its kinds, ProbeError, pytest.fail, pytest.UsageError, and the
assertions of the stage tests) has its first literal words on that page, so a message added without its entry fails
here with the file and line to document."""

from __future__ import annotations

import ast
import re

from harness.config import ROOT

PAGE = ROOT / "docs" / "troubleshooting.md"
SOURCES = ["harness", "fixtures", "kit", "commands", "tests/acceptance", "tests/resilience", "tests/endurance",
           "tests/pool_cost"]
# The exceptions whose first argument is the message a person reads. ParseError composes its own ("unexpected COMMAND
# output: ..."), and traps' problems reach people through the target's ConfigError (docs/configuration.md).
RAISED = {"DeploymentError", "KitError", "ClientError", "AisbenchError", "VllmBenchError", "Overdue", "ProbeError",
          "fail", "UsageError"}


def _pieces(node: ast.AST) -> list[str | None]:
    """A message's literal text pieces, None where a value is put in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value if isinstance(v, ast.Constant) else None for v in node.values]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _pieces(node.left) + _pieces(node.right)
    return [None]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z_][\w'-]*", text.lower())


def first_words(message: ast.AST) -> str | None:
    """The first words of a message's first literal piece that has any, before a quoted command or an aside; None
    when the message is only values (str(e), a prefix and an error)."""
    for piece in _pieces(message):
        if piece is None:
            continue
        words = _words(re.split(r"[(`]", piece.lstrip(" :;,.(`'\""), maxsplit=1)[0])
        if words:
            return " ".join(words[:4])
    return None


def messages() -> list[tuple[str, int, str]]:
    """(file, line, first words) of every message the code raises."""
    out = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                message = None
                if isinstance(node, ast.Call) and node.args:
                    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    message = node.args[0] if name in RAISED else None
                elif isinstance(node, ast.Assert) and node.msg is not None and folder.startswith("tests/"):
                    message = node.msg
                words = first_words(message) if message is not None else None
                if words:
                    out.append((str(path.relative_to(ROOT)), node.lineno, words))
    return out


def test_every_failure_message_is_keyed_by_its_first_words():
    page = " ".join(_words(PAGE.read_text()))
    missing = [f"{file}:{line}: {words!r}" for file, line, words in messages() if words not in page]
    assert missing == [], f"add these messages to {PAGE.relative_to(ROOT)}, keyed by their first words"


def test_the_harvest_finds_the_messages_it_must():
    found = {words for _, _, words in messages()}
    # a bring-up cause, a stage-1 assertion after its device label, a stage-5 pytest.fail, a usage error
    assert {"mooncake master not ready", "link", "step", "attach uses the running"} <= found
    assert "a message nobody wrote" not in found
