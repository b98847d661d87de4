"""Fixtures shared by the engine tests."""
import pytest

from synthetic import make_case


@pytest.fixture
def tiny_cases():
    """Three labeled-able binary cases of 16×24×24 voxels."""
    return [make_case(s) for s in range(3)]
