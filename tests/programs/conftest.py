"""pytest setup for tests/programs: stop early, with one clear line, when
there is no flock binary to test (see flockrun.py for FLOCK)."""
import os

import pytest

from flockrun import flock_path


@pytest.fixture(scope="session", autouse=True)
def _flock_exists():
    if not os.access(flock_path(), os.X_OK):
        pytest.exit("no flock binary at %s (run make, or set FLOCK)"
                    % flock_path(), returncode=2)
