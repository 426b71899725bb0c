from __future__ import annotations

import pytest
from device_trees import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
