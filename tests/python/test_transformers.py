# SPDX-License-Identifier: MIT
"""kvsink.transformers.KVSinkCache against a real kvsinkd with a real
transformers model (transformers_checks.py). Skips without torch and
transformers (CI); tests/gpu/transformers.sh runs them on the GPU machine."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import transformers_checks as tc  # noqa: E402


@pytest.fixture(scope="module")
def model():
    try:
        return tc.load_model()
    except tc.Skip as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("check", tc.CHECKS, ids=lambda c: c.__name__)
def test_check(sock, model, check):
    try:
        check(sock, model)
    except tc.Skip as e:
        pytest.skip(str(e))
