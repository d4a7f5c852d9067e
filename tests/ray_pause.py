"""A test plugin for Ray workers ($ISOKL_CELL_HOOK=ray_pause:pause, with this folder on PYTHONPATH): before a worker
writes a cell it marks the cell as running in $ISOKL_RAY_TEST_PAUSE (<cell>.<pid>.running) and waits until
<folder>/go or <folder>/go-<cell> exists, so a test can kill a worker mid-cell or a driver between cells."""

import os
import time
from pathlib import Path

PAUSE_ENV = "ISOKL_RAY_TEST_PAUSE"


def pause(name: str) -> None:
    d = os.environ.get(PAUSE_ENV)
    if not d:
        return
    Path(d, f"{name}.{os.getpid()}.running").touch()
    deadline = time.time() + 120
    while not (Path(d, "go").exists() or Path(d, f"go-{name}").exists()) and time.time() < deadline:
        time.sleep(0.05)


def env(folder) -> dict[str, str]:
    """The environment a driver (and the workers it starts) needs for the pause: the hook, the folder, this module."""
    here = str(Path(__file__).parent)
    path = os.environ.get("PYTHONPATH", "")
    return {
        "ISOKL_CELL_HOOK": "ray_pause:pause",
        PAUSE_ENV: str(folder),
        "PYTHONPATH": here + (os.pathsep + path if path else ""),
    }
