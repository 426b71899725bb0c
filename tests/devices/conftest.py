from __future__ import annotations

import pytest
from devices_fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
