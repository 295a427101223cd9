"""bench/grade_timing.py, the timing plugin of bench/bench_grade.py's replay and baseline.

The bench itself grades a class (minutes) and is run by hand; this checks, in a second, the part
that broke it once: a process running several pytest sessions (as the judge does) must give one
record per session, holding only that session's units.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"

SESSIONS = """
import json, sys
import pytest
import grade_timing

records = []
for name in sys.argv[1:]:
    pytest.main([name, "-q", "-p", "no:cacheprovider"], plugins=[grade_timing])
    records.append(dict(grade_timing.LAST))
print(json.dumps(records))
"""


def test_one_record_per_session_with_only_its_units(tmp_path: Path) -> None:
    for unit, sleep in (("logits", 0.05), ("sampling", 0.2)):
        (tmp_path / f"test_grade_{unit}.py").write_text(
            f"import time\n\ndef test_one():\n    time.sleep({sleep})\n\ndef test_two():\n    pass\n", encoding="utf-8")
    launched = time.time()
    done = subprocess.run([sys.executable, "-c", SESSIONS, "test_grade_logits.py", "test_grade_sampling.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(BENCH), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(first["tests"]) == ["logits"] and list(second["tests"]) == ["sampling"]
    assert 0.05 <= first["tests"]["logits"] < second["tests"]["sampling"]
    for record in (first, second):
        assert record["process_start"] is not None and launched - 1 < record["process_start"] <= record["collected"]
        assert record["collected"] <= record["finish"] <= time.time()
    assert second["collected"] >= first["finish"]
