"""Deep recursion through tracked calls never crashes the interpreter.

Each case runs in a subprocess, so a crash (a signal) fails the test instead of
killing pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import stored_runs
from mlflow.tracking import MlflowClient

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.setrecursionlimit({limit})
    import pcs

    {definition}

    depth = 0
    try:
        result = {call}
    except RecursionError:
        result = "RecursionError"
    print(result, depth)
    assert pcs.flush(120)
    """
)

FUNCTION = """
@pcs.tracked
def down(n):
    global depth
    depth += 1
    return 0 if n == 0 else down(n - 1) + 1
"""

METHOD = """
class Walker:
    @pcs.tracked
    def down(self, n):
        global depth
        depth += 1
        return 0 if n == 0 else self.down(n - 1) + 1
"""


def _run(limit: int, definition: str, call: str) -> tuple[str, int]:
    script = Path("deep.py")  # the test's own temporary working directory
    script.write_text(SCRIPT.format(limit=limit, definition=definition, call=call))
    env = dict(os.environ, PCS_AUTO_RECOVER="0")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    result, depth = out.stdout.split()
    return result, int(depth)


def test_tracked_recursion_to_the_interpreters_limit(client: MlflowClient) -> None:
    # 10,000 deep with the limit at 20,000: each level is two Python frames (the
    # tracked wrapper and the function), so this ends in RecursionError near the
    # bottom — the error, not a crash.
    result, depth = _run(20_000, FUNCTION, "down(10_000)")
    assert result in ("10000", "RecursionError")
    assert depth >= 9_900


def test_tracked_recursion_as_deep_as_the_limit_allows(client: MlflowClient) -> None:
    result, depth = _run(30_000, FUNCTION, "down(10_000)")
    assert (result, depth) == ("10000", 10_001)
    runs = [r for r in stored_runs(client).values()
            if r.data.tags.get("pcs.entry_point") == "down"]
    assert len(runs) == 10_001
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_unbounded_tracked_recursion_raises_recursion_error() -> None:
    result, depth = _run(5_000, FUNCTION, "down(10**9)")
    assert result == "RecursionError"
    assert depth > 2_000


def test_tracked_method_recursion_is_stopped_before_the_c_stack_overflows() -> None:
    # A tracked method goes through wrapt's C wrapper (C stack per level): pcs raises
    # RecursionError before the stack of the main thread (8 MiB here) overflows.
    result, depth = _run(200_000, METHOD, "Walker().down(50_000)")
    assert result == "RecursionError"
    assert depth > 2_000
