"""The tests marked ``xla_default`` in a second pytest process with XLA's flags as given.

The rest of the suite compiles without XLA's backend optimisation and with XLA:CPU's older
fusion emitters (see conftest.py), which users never do: bf16, the fused steps, an
ensemble, bit-identical resume and learning are checked here as users run them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import XLA_FLAGS_AS_GIVEN

TESTS = Path(__file__).resolve().parent
SELECT = ("-m", "xla_default")
EXPECTED = 8  # keep in step with the marked tests: a lost marker must not go unnoticed


def test_the_xla_default_tests_pass_with_xla_default_flags():
    env = {**os.environ, "XLA_FLAGS": XLA_FLAGS_AS_GIVEN, "RNNFC_TEST_XLA_DEFAULTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", *SELECT, str(TESTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.match(rf"{EXPECTED} passed, \d+ deselected", summary), summary
