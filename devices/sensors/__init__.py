"""Power sensors, one per module here, registered by name; see base.py and docs/devices.md.

`probe_all()` returns every sensor found on this machine, best first, always ending with the
utilisation model (estimated) so the list is never empty."""
from __future__ import annotations

from pathlib import Path

from devices._sysfs import Runner
from devices.sensors.base import INPUT_RAILS, PowerSample, PowerSensor, register_sensor, total_mw
from devices.sensors.base import _SENSORS


def sensor_names() -> list[str]:
    return _SENSORS.known()


def sensor_class(name: str) -> type[PowerSensor]:
    """The class registered as `name`; an unknown name raises SensorError listing the known ones."""
    return _SENSORS.lookup(name)


def open_sensor(name: str, root: Path = Path("/"), **kw) -> PowerSensor:
    """Open sensor `name`; SensorError when it is unknown or absent (saying what is missing)."""
    return sensor_class(name).open(Path(root), **kw)


def probe_all(root: Path = Path("/"), runner: Runner | None = None, **kw) -> list[PowerSensor]:
    """Every sensor present under `root`, best first; the last is always the utilisation model."""
    classes = sorted((sensor_class(n) for n in sensor_names()), key=lambda c: (c.priority, c.name))
    found = [s for cls in classes if (s := cls.probe(Path(root), runner=runner, **kw)) is not None]
    if not found or found[-1].name != "utilisation":
        found.append(open_sensor("utilisation", root, **kw))
    return found


__all__ = ["INPUT_RAILS", "PowerSample", "PowerSensor", "open_sensor", "probe_all",
           "register_sensor", "sensor_class", "sensor_names", "total_mw"]
