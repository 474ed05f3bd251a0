"""The data directory is private (CONTRACT decision 8): directories 0700, files 0600.

`cdrwatch` sets the process umask to 077 at start (`PRIVATE_UMASK`), so everything it and
its children create there (SQLite database and journal, logs, pid files, tokens, the
pseudonym key, the detector's tables) is owner-only; `secure_data_dir` also takes group
and other bits off whatever an older run left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) owner-only; an existing one is made 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # not ours (e.g. a mounted volume root)
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(DIR_MODE)
    return path


def secure_data_dir(path: Path) -> Path:
    """`ensure_private_dir(path)`, then every directory and file below it without group
    and other permissions (symbolic links are left alone)."""
    ensure_private_dir(path)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            entry = Path(root) / name
            with contextlib.suppress(OSError):
                info = entry.lstat()
                if stat.S_ISLNK(info.st_mode):
                    continue
                mode = stat.S_IMODE(info.st_mode)
                if mode & 0o077:
                    entry.chmod(mode & ~0o077)
    return path
