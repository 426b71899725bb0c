"""What software produced a result: edgert, Python, numpy and whichever optional packages are installed."""
from __future__ import annotations

import platform


def versions(*dists: str) -> dict[str, str]:
    """{"edgert", "python", "numpy"} plus each named distribution that is installed."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy

    import edgert

    out = {"edgert": edgert.__version__, "python": platform.python_version(), "numpy": numpy.__version__}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out
