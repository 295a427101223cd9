"""The course tooling: the exercises, the class grader and the models the kit ships.

Beside the data flow, using all of it: ``stubs`` makes the students' exercises (and notebooks)
from the solutions, ``grade`` runs the autograder in tests/autograder on a whole class's work, and
``family`` trains, fine-tunes and scores the tiny model families under data/models (their
held-out stories and instructions are what the notebooks score). No folder of the package imports
this one: the command (``minillm/cli/``), the notebooks and the tests do.
"""
