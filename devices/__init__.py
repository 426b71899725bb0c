"""Device detection, power sensors, energy metering and thermal state for edge boards.

`import devices` is cheap (stdlib only): psutil and smbus2 are imported inside the sensors that
use them. Power sensors live in devices.sensors (one per file), the meter in devices.meter."""
from __future__ import annotations

from devices.detect import DeviceInfo, detect

__all__ = ["DeviceInfo", "detect"]
