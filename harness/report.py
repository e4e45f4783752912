"""Reporting: Allure environment and categories, TTFT charts and tables, and the offline HTML report.

Plain functions that return bytes or text; the fixtures attach them to Allure. `allure_report` (and
`python -m commands.report`) turns a run's `--alluredir` results into one self-contained HTML file, with
trends carried from the previous report's history.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from harness.names import DEPLOYMENT
from harness.progress import logger

if TYPE_CHECKING:
    from harness.results_file import NightsRecord, TtftStats

ROOT = Path(__file__).resolve().parent.parent
ALLURE_VERSION = "2.46.1"
# npm --prefix: the package lands in node_modules/ under it. KVPOOL_ALLURE_DIR moves it (a self-test installs afresh).
ALLURE_DIR = Path(os.environ.get("KVPOOL_ALLURE_DIR") or ROOT / ".cache" / "allure")


class ReportError(RuntimeError):
    pass

log = logger("report")


# --- environment.properties ----------------------------------------------------------------------------------------


def _escape(text: str, is_key: bool) -> str:
    """Java properties escaping, as Properties.store writes it (non-ASCII as \\uXXXX UTF-16 units)."""
    out = []
    for i, c in enumerate(text):
        if c in "\\=:#!":
            out.append("\\" + c)
        elif c == " " and (is_key or i == 0):  # a value's inner spaces are literal, its leading ones are not
            out.append("\\ ")
        elif c in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[c])
        elif " " <= c <= "~":
            out.append(c)
        else:
            units = c.encode("utf-16-be")
            out.extend(f"\\u{units[j]:02X}{units[j + 1]:02X}" for j in range(0, len(units), 2))
    return "".join(out)


def environment_properties(values: dict[str, str]) -> str:
    """Allure's environment.properties: one `key=value` line per entry, keys sorted."""
    return "".join(f"{_escape(k, True)}={_escape(str(values[k]), False)}\n" for k in sorted(values))


def write_environment(results_dir: Path, values: dict[str, str]) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "environment.properties").write_text(environment_properties(values), encoding="ascii")


# --- categories.json -----------------------------------------------------------------------------------------------

# Allure matches messageRegex against the whole message with DOTALL (Pattern.compile(r, DOTALL).matcher(m).matches())
# and puts a result in EVERY category that matches, so these are made disjoint. allure-pytest's message is pytest's
# exconly(): "AssertionError: device 5: ...", "Failed: deployment: ...", hence the optional exception name. The
# stages' explicit "deployment:" prefix wins over a mere mention elsewhere (a bring-up log tail may name hccn.conf).
# Only ASCII classes, so Java and Python read every pattern the same way.
_EXC = r"(?:[A-Za-z_][A-Za-z0-9_.]*: )?"
_DEPLOYMENT = _EXC + re.escape(DEPLOYMENT.strip())
CATEGORIES: list[dict] = [
    {"name": "Product regressions (thresholds)", "matchedStatuses": ["failed"],
     "messageRegex": rf"(?s)(?!{_DEPLOYMENT}).*thresholds\..*"},
    {"name": "Environment faults (NPU network)", "matchedStatuses": ["failed"],
     "messageRegex": rf"(?s)(?!{_DEPLOYMENT})(?!.*thresholds\.)(?:{_EXC}device [0-9]+:.*|.*hccn\.conf.*)"},
    {"name": "Deployment faults", "matchedStatuses": ["failed", "broken"], "messageRegex": rf"(?s){_DEPLOYMENT}.*"},
    {"name": "Suite bugs", "matchedStatuses": ["broken"], "messageRegex": rf"(?s)(?!{_DEPLOYMENT}).*"},
]


def write_categories(results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=2) + "\n")


# --- executor.json -------------------------------------------------------------------------------------------------

# The Jenkinsfile's publishHTML reportName: HTML Publisher serves the report at BUILD_URL/<reportName>/ (a space
# would become "_20"), which is where the Executors box links.
JENKINS_REPORT_NAME = "Allure"

def executor(env: Mapping[str, str], host: str) -> dict:
    """Allure's Executors box: the Jenkins build (name, number, URL) when its variables are set, else this host,
    so a nightly report links back to the build that made it."""
    if env.get("BUILD_URL") and env.get("JENKINS_URL"):
        number = env.get("BUILD_NUMBER", "")
        out = {"name": "Jenkins", "type": "jenkins", "url": env["JENKINS_URL"],
               "buildName": f"{env.get('JOB_NAME', 'build')} #{number}", "buildUrl": env["BUILD_URL"],
               "reportUrl": f"{env['BUILD_URL'].rstrip('/')}/{JENKINS_REPORT_NAME}/",
               "reportName": "KV pool acceptance"}
        if number.isdigit():
            out["buildOrder"] = int(number)  # orders the history and trend graphs
        return out
    return {"name": host, "type": "local", "buildName": f"{env.get('USER', 'run')}@{host}",
            "reportName": "KV pool acceptance"}


def write_executor(results_dir: Path, env: Mapping[str, str], host: str) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "executor.json").write_text(json.dumps(executor(env, host), indent=2) + "\n")


# --- TTFT chart and tables -----------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def ttft_chart_png(steps: dict[str, list[float]], title: str, thresholds: dict[str, float] | None = None, *,
                   cold_step: str | None = None) -> bytes:
    """A 1000x500 PNG of TTFT per step (seconds in, ms shown): box, jittered points, the mean marked.

    thresholds maps a step to its maximum mean TTFT in seconds, drawn as a dashed line over that step and
    labelled as a fraction of the mean of cold_step (default: the first step). Same input, same bytes.
    """
    from matplotlib.figure import Figure  # imported here: slow to import, and only the chart needs it

    thresholds = thresholds or {}
    cold_name = cold_step or next(iter(steps), None)
    cold = steps.get(cold_name) or []
    cold_mean = sum(cold) / len(cold) if cold else None
    rng = random.Random(0)  # fixed jitter: the same run draws the same picture
    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    top = 0.0
    for x, (name, values) in enumerate(steps.items(), start=1):
        ms = [v * 1e3 for v in values]
        if ms:
            ax.boxplot([ms], positions=[x], widths=0.45, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": "#e8eef6", "edgecolor": "#4a5a70"},
                       medianprops={"color": "#4a5a70"}, whiskerprops={"color": "#4a5a70"},
                       capprops={"color": "#4a5a70"})
            ax.scatter([x + rng.uniform(-0.17, 0.17) for _ in ms], ms, s=14, color="tab:blue", alpha=0.45,
                       linewidths=0, zorder=3)
            mean = sum(values) / len(values)
            ax.scatter([x], [mean * 1e3], marker="D", s=40, color="navy", zorder=4)
            ax.annotate(f"mean {_ms(mean)} ms", (x + 0.25, mean * 1e3), va="center", fontsize=10, color="navy",
                        fontweight="bold")
            top = max(top, *ms)
        else:
            ax.text(x, 0.5, "no successful requests", transform=ax.get_xaxis_transform(), ha="center",
                    fontsize=10, color="dimgray", style="italic")
        if name in thresholds:
            limit = thresholds[name]
            ax.hlines(limit * 1e3, x - 0.4, x + 0.4, colors="crimson", linestyles="dashed", linewidth=1.5, zorder=5)
            fraction = f"{limit / cold_mean:.2g} x cold = " if cold_mean else ""
            ax.annotate(f"limit {fraction}{_ms(limit)} ms", (x - 0.4, limit * 1e3), xytext=(0, 3),
                        textcoords="offset points", fontsize=9, color="crimson")
            top = max(top, limit * 1e3)
    labels = [f"{name}\n{len(values)} ok" for name, values in steps.items()]
    ax.set_xticks(range(1, len(steps) + 1), labels, fontsize=10)
    ax.set_xlim(0.4, len(steps) + 0.6)
    ax.set_ylim(0, top * 1.12 or 1)
    ax.set_ylabel("TTFT (ms)", fontsize=10)
    ax.set_title(title, fontsize=12)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: bytes depend on the data only
    return buf.getvalue()


def nights_chart_png(record: NightsRecord, tonight_started: float, title: str) -> bytes:
    """A 1000x500 PNG of each comparison's ratio across nights: the baseline runs (oldest first) and tonight, one line
    per ratio, its baseline (the median) dashed and where a regression starts dotted. Same input, same bytes."""
    from matplotlib.figure import Figure  # imported here: slow to import, and only the charts need it

    nights = [r.file for r in record.runs]
    when = {r.file: r.started for r in record.runs}
    labels = [time.strftime("%m-%d %H:%M", time.gmtime(when[f])) for f in nights]
    labels.append(time.strftime("%m-%d %H:%M", time.gmtime(tonight_started)) + "\ntonight")
    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan")
    ratios = [f for f in record.findings if f.kind == "ratio"]
    top = max([v for f in ratios for v in (*f.values, f.tonight, f.limit) if v is not None], default=0.0)
    for i, f in enumerate(ratios):
        color = colors[i % len(colors)]
        xs = [nights.index(run) for run in f.runs]
        ys = list(f.values)
        if f.tonight is not None:
            xs.append(len(nights))
            ys.append(f.tonight)
        ax.plot(xs, ys, marker="o", color=color, label=f"{f.name} ({f.verdict})")
        if f.tonight is not None and f.verdict == "regression":
            ax.scatter([len(nights)], [f.tonight], marker="X", s=120, color="crimson", zorder=5)
        if f.baseline is not None:
            ax.hlines(f.baseline, -0.3, len(nights) + 0.3, colors=color, linestyles="dashed", linewidth=1)
            ax.annotate(f"median {f.baseline:.3f}", (-0.3, f.baseline), xytext=(0, 3), textcoords="offset points",
                        fontsize=8, color=color)
        if f.limit is not None:
            ax.hlines(f.limit, -0.3, len(nights) + 0.3, colors=color, linestyles="dotted", linewidth=1)
            ax.annotate(f"limit {f.limit:.3f}", (len(nights) + 0.3, f.limit), xytext=(0, 3),
                        textcoords="offset points", fontsize=8, color=color, ha="right")
    if not ratios:
        ax.text(0.5, 0.5, "no comparison was judged tonight", transform=ax.transAxes, ha="center", fontsize=10,
                color="dimgray", style="italic")
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylim(0, top * 1.15 or 1)
    ax.set_ylabel("ratio (target step / baseline step)", fontsize=10)
    ax.set_title(title, fontsize=12)
    ax.grid(axis="y", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    if ratios:
        ax.legend(fontsize=9, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: bytes depend on the data only
    return buf.getvalue()


STAT_KEYS = ("mean", "median", "p90", "p99", "min", "max")
HEADER = ("step", "ok/failed", *STAT_KEYS, "mean/cold")


def _rows(stats: Mapping[str, TtftStats], cold_step: str, served_by: dict[str, str] | None = None) -> list[list[str]]:
    cold = stats[cold_step].mean if cold_step in stats else None
    rows = []
    for name, s in stats.items():
        ratio = f"{s.mean / cold:.2f}" if s.mean is not None and cold else "-"
        rows.append([name, f"{s.ok}/{s.failed}", *(_ms(getattr(s, k)) for k in STAT_KEYS), ratio]
                    + ([served_by.get(name, "-")] if served_by is not None else []))
    return rows


def _caption(cold_step: str) -> str:
    return f"TTFT in ms over the successful requests; mean/cold: mean over the mean of {cold_step}"


def _aligned(caption: str, header: list[str], rows: list[list[str]]) -> str:
    """A text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([caption, line(rows[0]), rule, *map(line, rows[1:])]) + "\n"


def _header(served_by: dict[str, str] | None) -> list[str]:
    return [*HEADER, "served by"] if served_by is not None else list(HEADER)


def ttft_table(stats: Mapping[str, TtftStats], cold_step: str, served_by: dict[str, str] | None = None) -> str:
    """Per-step TTFT as aligned text. stats maps a step to its record's TTFT statistics (seconds, None without data);
    served_by, when given, a step to the cache that served it (harness.evidence.served_by)."""
    return _aligned(_caption(cold_step), _header(served_by), _rows(stats, cold_step, served_by))


def _at(position: int | None) -> str:
    return "" if position is None else f" at {position}"


def probe_table(verdict) -> str:
    """The correctness probe per prompt (harness.probe.Verdict): hit lengths, the verdict, the second opinion."""
    rows = []
    for p in verdict.prompts:
        c, pool = p["cached_tokens"], p["pool_tokens"]
        second = p.get("cold_vs_pool", {})
        rows.append([str(p["index"]), str(p["prompt_tokens"]), str(c["cold"]), str(c["local_hit"]),
                     f"{c['pool_hit']} ({pool['pool_hit']})", p["verdict"] + _at(p.get("position")),
                     second.get("verdict", "-") + _at(second.get("position"))])
    m = verdict.miss_control or {}
    caption = (f"pool hit against local hit, {verdict.output_len} greedy tokens, one request at a time; cached "
               f"tokens per request (pool part in brackets); cold vs pool within top {verdict.top_logprobs}; miss "
               f"control: {m.get('cached_tokens')} cached tokens on {m.get('instance')}; {verdict.seconds:.1f} s")
    header = ["prompt", "tokens", "cold", "local hit", "pool hit", "pool = local", "cold vs pool"]
    return _aligned(caption, header, rows)


def ttft_table_html(stats: Mapping[str, TtftStats], cold_step: str, served_by: dict[str, str] | None = None) -> str:
    """The same table as a small HTML page (Allure shows text/html attachments in a frame)."""
    def cells(tag: str, row) -> str:
        return "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in _rows(stats, cold_step, served_by))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>"
            "table{border-collapse:collapse;font:13px sans-serif}caption{text-align:left;padding:4px 0;color:#555}"
            "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}"
            "th:first-child,td:first-child{text-align:left}th{background:#f3f5f8}"
            f"</style></head><body><table><caption>{html.escape(_caption(cold_step))}</caption>"
            f"<thead><tr>{cells('th', _header(served_by))}</tr></thead><tbody>{body}</tbody></table></body></html>\n")


# --- the offline HTML report ---------------------------------------------------------------------------------------


def ensure_allure() -> Path:
    """Allure's launcher, installed by npm into .cache/allure (again only when the pinned version changed)."""
    package = ALLURE_DIR / "node_modules" / "allure-commandline"
    # The Java launcher itself: running it needs Java only, not node.
    launcher = package / "dist" / "bin" / "allure"
    try:
        installed = json.loads((package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    if installed == ALLURE_VERSION and launcher.exists():
        log.info(f"allure {ALLURE_VERSION} found in {ALLURE_DIR}")
        return launcher
    npm = shutil.which("npm")
    if npm is None:
        raise ReportError(f"npm is not installed, and it is needed once to install Allure into {ALLURE_DIR} "
                          "(apt-get install npm)")
    log.info(f"installing allure-commandline {ALLURE_VERSION} into {ALLURE_DIR} (npm)")
    # --prefix alone would make npm read its global config from under the prefix, losing the machine's own
    # (its cafile behind a TLS-inspecting proxy): name the real one, as npm finds it without a prefix.
    found = subprocess.run([npm, "config", "get", "globalconfig"], capture_output=True, text=True)
    globalconfig = found.stdout.strip() if found.returncode == 0 else ""
    done = subprocess.run([npm, "install", "--prefix", str(ALLURE_DIR), "--no-audit", "--no-fund",
                           *([f"--globalconfig={globalconfig}"] if globalconfig else []),
                           f"allure-commandline@{ALLURE_VERSION}"], capture_output=True, text=True)
    if done.returncode != 0 or not launcher.exists():
        raise ReportError(f"npm install allure-commandline@{ALLURE_VERSION} failed (exit {done.returncode}):\n"
                          f"{(done.stdout + done.stderr)[-2000:]}")
    return launcher


def _java_present() -> bool:
    home = os.environ.get("JAVA_HOME")  # Allure's launcher prefers JAVA_HOME, like this check
    return Path(home, "bin", "java").exists() if home else shutil.which("java") is not None


# The single-file report writes no history/ directory (allure-framework/allure2#2740): it embeds every report file
# as d('<path>','<base64>') in index.html, history/*.json included, so the history is read back from there.
_EMBEDDED_HISTORY = re.compile(r"d\('(history/[A-Za-z0-9_.-]+)','([A-Za-z0-9+/=]*)'\)")


def embedded_history(index_html: str) -> dict[str, bytes]:
    """The history files a single-file report embeds, by name (history-trend.json, ...)."""
    return {Path(name).name: base64.b64decode(data) for name, data in _EMBEDDED_HISTORY.findall(index_html)}


def allure_report(results: Path, out: Path, history: Path, *, name: str = "KV pool acceptance") -> Path:
    """Generate out/index.html, a single-file Allure report of results named name, with trends from history; then
    update history with this report's, for the next run. Returns the report's path."""
    if not any(results.glob("*-result.json")):
        raise ReportError(f"no Allure results in {results} (no *-result.json): run the suite with "
                          f"--alluredir={results} first (tox -e acceptance does)")
    if not _java_present():
        raise ReportError("java is not installed, and Allure runs on it (apt-get install default-jre-headless)")
    launcher = ensure_allure()
    shutil.rmtree(results / "history", ignore_errors=True)
    if history.is_dir() and any(history.iterdir()):
        shutil.copytree(history, results / "history")
        try:
            builds = len(json.loads((history / "history-trend.json").read_text()))
        except (OSError, ValueError):
            builds = "?"
        log.info(f"trends: history of {builds} earlier report(s) from {history}")
    else:
        log.info(f"trends: no history at {history}, so they start with this report")
    log.info(f"allure generate --single-file {results} -> {out}")
    started = time.monotonic()
    command = [str(launcher), "generate", "--single-file", "--clean", "--name", name, "-o", str(out), str(results)]
    # ALLURE_NO_ANALYTICS: no Google Analytics tag in the page, which must open offline.
    done = subprocess.run(command, env={**os.environ, "ALLURE_NO_ANALYTICS": "true"}, capture_output=True, text=True)
    index = out / "index.html"
    if done.returncode != 0 or not index.exists():
        raise ReportError(f"allure generate failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    files = embedded_history(index.read_text(encoding="utf-8"))
    if "history.json" not in files:
        raise ReportError(f"{index} embeds no history/history.json: Allure {ALLURE_VERSION} no longer stores it "
                          "as this module expects")
    shutil.rmtree(history, ignore_errors=True)
    history.mkdir(parents=True)
    for file, data in files.items():
        (history / file).write_bytes(data)
    log.info(f"wrote {index} ({index.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s; "
             f"history for the next report in {history}")
    return index
