"""Compare finished runs over seeds: a Markdown report, a CSV and PNG plots.

    python benchmarks/report.py runs/suite            # writes report.md, results.csv, plots/ there
    python benchmarks/report.py runs/suite --out docs  # somewhere else
    python benchmarks/report.py runs/suite --readme README.md --readme docs/results.md  # and into their blocks
    python benchmarks/report.py runs/suite --archive results/suite  # and each run's results, without its weights

Every value is the mean over seeds with its 95% interval; beside it the difference from MLE paired by seed (and
by prompt), marked where significant after Holm's correction (benchmarks/reporting/report.py says how). A
Markdown file given with --readme gets the tables between its ``<!-- suite-tables:begin -->`` and
``<!-- suite-tables:end -->`` markers, and the compact headline table between ``suite-headline`` markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.reporting.archive import archive_runs, check_archive_dir
from benchmarks.reporting.report import write_report
from benchmarks.reporting.runs import jobs_by_outcome
from benchmarks.runner.cli import check_output_dir, fail, user_errors_as_one_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a directory holding runs (searched recursively)")
    parser.add_argument("--out", type=Path, help="where to write report.md, results.csv, plots/ (default: runs)")
    parser.add_argument(
        "--readme", type=Path, action="append", default=[], help="also fill this Markdown file's blocks (repeatable)"
    )
    parser.add_argument(
        "--readme-block", default="suite", help="the blocks' name: <!-- NAME-tables:begin --> ... and NAME-headline"
    )
    parser.add_argument(
        "--at",
        default="end",
        choices=["end", "best"],
        help="compare each run's final model (end) or its best validation step's (best: runs with eval.at_best=true; "
        "into report_at_best.md, results_at_best.csv, plots_at_best/)",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        help="also copy each finished run's results.json and per-prompt metrics (no weights, no text) here, in the "
        "runs' layout: a directory this script reads back into the same tables",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a job failed (after writing everything; make bench uses it)"
    )
    args = parser.parse_args(argv)
    check_output_dir(str(args.out or args.runs), "--out" if args.out else "runs")  # before any work: one line
    if args.archive:
        check_output_dir(str(args.archive), "--archive")
        user_errors_as_one_line(check_archive_dir)(args.runs, args.archive)
    report = user_errors_as_one_line(write_report)(args.runs, args.out, args.readme, args.readme_block, args.at)
    if args.archive:
        copied = user_errors_as_one_line(archive_runs)(args.runs, args.archive)
        print(f"archive: {copied} runs -> {args.archive}")
    jobs = jobs_by_outcome(report.rows.values())
    failed, unfinished = jobs["failed"], jobs["unfinished"]
    if args.strict and (failed or unfinished):
        said = [f"{len(failed)} job(s) failed: {', '.join(failed)} (see their failed.json)"] if failed else []
        if unfinished:
            said.append(f"{len(unfinished)} job(s) unfinished (killed, or still running): {', '.join(unfinished)}")
        fail("; ".join(said), code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
