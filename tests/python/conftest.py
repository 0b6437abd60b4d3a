# SPDX-License-Identifier: MIT
"""pytest setup: the kvsink package from the source tree, a private
kvsinkd whose socket tests/python/run.sh puts in $KVSINK_SOCKET."""
import os
import sys
import uuid

import pytest

top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(top, "python"))


@pytest.fixture
def sock():
    s = os.environ.get("KVSINK_SOCKET")
    if not s or not os.path.exists(s):
        pytest.skip("no kvsinkd: run through tests/python/run.sh")
    return s


@pytest.fixture
def model_id():
    """A model id of its own per test: caches of different ids never mix."""
    return "pytest-" + uuid.uuid4().hex[:12]
