"""The course tooling: the exercises and the class grader.

Beside the data flow, not in it: ``stubs`` makes the students' exercises (and notebooks) from the
solutions, and ``grade`` runs the autograder in tests/autograder on a whole class's work. Only the
command (``minillm/cli.py``: ``make-exercises``, ``grade``) imports this folder.
"""
