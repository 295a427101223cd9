"""The autograder's command-line options (``--target``, ``--grader-seed``, ``--grade-json``,
``--time-limit-scale``, and ``--grade-mode`` with its folders for ``minillm grade``).

Both ``conftest.py`` files declare them through :func:`add_grader_options`: the one in the
repository root, which pytest loads before it reads the command line of a run started there
(without it, ``pytest --grader-seed 1234`` stops with "unrecognized arguments": pytest takes
``1234`` for a test path and never loads this folder's conftest.py before parsing), and the one
in this folder, for runs that do not start at the root (``minillm grade --autograder PATH``).
"""

from __future__ import annotations

GROUP = "minillm autograder"


def add_grader_options(parser) -> None:
    """Declare the options on pytest's ``parser``, once (a second call adds nothing)."""
    group = parser.getgroup(GROUP)
    if any("--target" in option.names() for option in group.options):
        return
    group.addoption("--target", default="exercises",
                    help="what to grade: a folder holding the units' modules or notebooks (<unit>.py or "
                         "<unit>.ipynb): 'exercises' (default), 'solutions' or a submission's folder; or one "
                         "file <unit>.py / <unit>.ipynb, which grades that unit only (outside the repository, write --target=PATH)")
    group.addoption("--grader-seed", type=int, default=None,
                    help="seed for the random texts/shapes the tests draw (default: a fresh one per run)")
    group.addoption("--tiny-model", default="qwen2", choices=("qwen2", "gpt2"),
                    help="architecture of the tiny_model fixture (default qwen2); gpt2 grades the units "
                         "that only call the model (logits, sampling, quantization) on a GPT-2, the logits "
                         "notebook's model (perplexity and scaling grade on the trained tiny-s, a Qwen2)")
    group.addoption("--grade-json", default=None, metavar="PATH",
                    help="also write the results as a Gradescope results.json file to PATH")
    group.addoption("--grade-key-fd", type=int, default=None, metavar="FD",
                    help="(for `minillm grade`) read the key that signs the results file from this pipe")
    group.addoption("--grade-mode", default="direct", choices=("direct", "plan", "probe", "judge"),
                    help="(for `minillm grade`, apart.py) direct: run and check the student's code here (default); "
                         "plan: record the reference's calls; probe: only call the student's functions and write "
                         "their outputs; judge: check the recorded outputs, running no student code")
    group.addoption("--grade-calls", default=None, metavar="DIR",
                    help="(plan, probe) the folder of the recorded calls")
    group.addoption("--grade-outputs", default=None, metavar="DIR",
                    help="(probe, judge) the folder of the student's recorded outputs")
    group.addoption("--time-limit-scale", type=float, default=1.0, metavar="F",
                    help="multiply every test's time limit by F (default 1; e.g. 2 on a slow machine)")
    group.addoption("--memory-limit-gb", type=float, default=8.0, metavar="GB",
                    help="address space the grading process may use (default 8; 0: no limit); an allocation "
                         "beyond it fails the test that made it instead of exhausting the machine")
