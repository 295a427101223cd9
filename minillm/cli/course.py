"""``minillm make-exercises | grade | gradescope-bundle | classroom-template``: the course tooling."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from minillm.checkpoint.safe_io import check_output_file, refuse_to_overwrite
from minillm.cli.args import HelpFormatter, add_overwrite, positive_float, positive_int
from minillm.errors import InputError


def cmd_make_exercises(args: argparse.Namespace) -> None:
    """Write exercises/ from solutions/ (or, with --check, only say whether it is up to date)."""
    from minillm.course.stubs import EXERCISES_DIR, SOLUTIONS_DIR, make_exercises, out_of_sync

    solutions = SOLUTIONS_DIR if args.solutions is None else args.solutions
    exercises = EXERCISES_DIR if args.exercises is None else args.exercises
    try:
        if args.check:
            problems = out_of_sync(solutions, exercises)
            if problems:
                raise InputError("exercises/ or the notebooks are out of date; run `minillm make-exercises`:\n  "
                                 + "\n  ".join(problems))
            print(f"{exercises} is in sync with {solutions}.")
            return
        for path in make_exercises(solutions, exercises, force=args.force):
            print(f"wrote {path}")
    except FileNotFoundError as err:
        raise InputError(str(err)) from err


def cmd_grade(args: argparse.Namespace) -> None:
    """Grade every submission folder with the autograder, one subprocess each; write a CSV."""
    from minillm.course.feedback import feedback_folder
    from minillm.course.grade import grade_class

    check_output_file(args.out)   # before grading a whole class, not after
    if not args.overwrite:
        refuse_to_overwrite(args.out, "a file (earlier grades?)")
    start = time.monotonic()
    rows = grade_class(args.submissions, args.out, timeout=args.timeout, autograder=args.autograder,
                       progress=not args.quiet, units=args.units, time_limit_scale=args.time_limit_scale,
                       jobs=args.jobs, sandbox=args.sandbox)
    statuses = [row["status"] for row in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "timeout", "crashed", "refused") if s in statuses)
    print(f"graded {len(rows)} submissions in {time.monotonic() - start:.0f} s ({counts}): wrote {args.out} and "
          f"each student's results.json and feedback.txt in {feedback_folder(args.out)}")


def cmd_gradescope_bundle(args: argparse.Namespace) -> None:
    """Write Gradescope's autograder zip."""
    from minillm.course.gradescope import build_bundle

    check_output_file(args.out)
    if not args.overwrite:
        refuse_to_overwrite(args.out, "a file (an earlier bundle?)")
    out = build_bundle(args.out, units=args.units, time_limit_scale=args.time_limit_scale, timeout=args.timeout)
    print(f"wrote {out}: upload it in Gradescope (Configure Autograder > Zip file upload)")


def cmd_classroom_template(args: argparse.Namespace) -> None:
    """Write a GitHub Classroom starter repository."""
    from minillm.course.classroom import KIT_URL_PLACEHOLDER, write_template

    out = write_template(args.out, units=args.units, kit_url=args.kit_url, kit_ref=args.kit_ref,
                         time_limit_scale=args.time_limit_scale, timeout=args.timeout)
    print(f"wrote {out}: push it to a repository and make that the assignment's template")
    if args.kit_url is None:
        print(f"  then set KIT_URL in {out}/.github/workflows/classroom.yml (now {KIT_URL_PLACEHOLDER})")


def _add_grading_limits(parser: argparse.ArgumentParser, what: str, scale_help: str, timeout_help: str) -> None:
    """--units, --time-limit-scale and --timeout: what a packaged grader grades, and how long it may take."""
    parser.add_argument("--units", default=None, metavar="UNIT,UNIT", help=f"the units it {what} (default: all)")
    parser.add_argument("--time-limit-scale", type=positive_float, default=1.0, metavar="F", help=scale_help)
    parser.add_argument("--timeout", type=positive_float, default=300.0, help=timeout_help)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Declare this group's commands."""
    stubs = commands.add_parser("make-exercises", formatter_class=HelpFormatter,
                                help="write exercises/ (stubs) from solutions/")
    stubs.add_argument("--check", action="store_true", help="only check that exercises/ is up to date (exit 1 if not)")
    stubs.add_argument("--force", action="store_true",
                       help="replace exercise files edited since they were generated (a student's edits are lost)")
    stubs.add_argument("--solutions", type=Path, default=None, metavar="DIR",
                       help="the reference solutions to read (default: the kit's solutions/)")
    stubs.add_argument("--exercises", type=Path, default=None, metavar="DIR",
                       help="where to write the exercises (default: the kit's exercises/)")
    stubs.set_defaults(run=cmd_make_exercises)

    grade = commands.add_parser("grade", formatter_class=HelpFormatter,
                                help="grade a class: one folder of unit modules or notebooks per student")
    grade.add_argument("submissions", type=Path, help="folder with one subfolder per student")
    grade.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV to write")
    add_overwrite(grade, "replace an existing --out CSV")
    grade.add_argument("--timeout", type=positive_float, default=300.0,
                       help="seconds one unit's grading run may take (a unit that takes longer scores 0)")
    grade.add_argument("--units", default=None, metavar="UNIT,UNIT",
                       help="grade only these units, comma-separated, e.g. logits,perplexity (default: all)")
    grade.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                       help="grade N students at the same time (each run uses one thread and ~0.5 GB)")
    grade.add_argument("--time-limit-scale", type=positive_float, default=1.0, metavar="F",
                       help="multiply every test's time limit by F (e.g. 2 on a slow machine)")
    grade.add_argument("--autograder", type=Path, default=None,
                       help="the autograder's folder (default: tests/autograder of the minillm repository)")
    grade.add_argument("--sandbox", choices=("auto", "bwrap", "process"), default="auto",
                       help="where student code runs: bwrap (a bubblewrap sandbox: sees only the kit, its own "
                            "files and a private /tmp), process (a process with your rights), auto (bwrap when "
                            "it starts here, else process, said up front)")
    grade.add_argument("--quiet", action="store_true",
                       help="print only errors, the warning when there is no sandbox, and a one-line summary at "
                            "the end (no bar, no line per student)")
    grade.set_defaults(run=cmd_grade)

    # Gradescope and GitHub Classroom: the class grader packaged for the engines a class is graded on.
    bundle = commands.add_parser("gradescope-bundle", formatter_class=HelpFormatter,
                                 help="write Gradescope's autograder zip (setup.sh, run_autograder, the grader)")
    bundle.add_argument("--out", type=Path, default=Path("autograder.zip"), help="zip to write (default %(default)s)")
    add_overwrite(bundle, "replace an existing --out zip")
    _add_grading_limits(bundle, "grades",
                        "multiply every test's time limit by F (Gradescope's machines are slower than a laptop)",
                        "seconds one unit's run may take; set Gradescope's limit above units x this")
    bundle.set_defaults(run=cmd_gradescope_bundle)

    template = commands.add_parser("classroom-template", formatter_class=HelpFormatter,
                                   help="write a GitHub Classroom starter repository with a grading workflow")
    template.add_argument("--out", type=Path, required=True, help="a new or empty folder (required, no default)")
    template.add_argument("--kit-url", default=None,
                          help="git URL the workflow installs the kit from (default: a placeholder to edit)")
    template.add_argument("--kit-ref", default="HEAD", help="branch, tag or commit of --kit-url (pin a tag or commit)")
    _add_grading_limits(template, "holds", "multiply every test's time limit by F", "seconds one unit's run may take")
    template.set_defaults(run=cmd_classroom_template)
