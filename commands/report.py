"""The offline single-file Allure report of a run, with trends from the previous report's history (tox -e report).

    python -m commands.report --results reports/allure-results --out reports/allure-report \
        --history reports/allure-history
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.report import ReportError, allure_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commands.report",
                                     description="Build the offline single-file Allure report of a run, with "
                                                 "trends from the previous report's history.")
    parser.add_argument("--results", type=Path, default=Path("reports/allure-results"),
                        help="pytest's --alluredir (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("reports/allure-report"),
                        help="the report directory; its index.html is the report (default: %(default)s)")
    parser.add_argument("--history", type=Path, default=Path("reports/allure-history"),
                        help="kept between runs: read for trends, then replaced (default: %(default)s)")
    parser.add_argument("--name", default="KV pool acceptance", help="the report's title (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        allure_report(args.results, args.out, args.history, name=args.name)
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
