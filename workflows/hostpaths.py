"""Host paths a container step may mount: the engine's data dir, plus ``SLUICE_VOLUME_ALLOW``.

One allow-list for both ends: the engine refuses a job whose volume is outside it, and the loader
(given the same data dir, as ``sluice validate --data-dir`` and ``sluice serve`` do) refuses the
workflow file, so a volume that could never run is an error when the file loads, not at the run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

ALLOW_ENV = "SLUICE_VOLUME_ALLOW"


def volume_roots(data_dir: str | os.PathLike[str], environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The data dir, plus the ``:``-separated folders of ``SLUICE_VOLUME_ALLOW``, symlinks resolved."""
    roots = [Path(data_dir).resolve()]
    extra = environ.get(ALLOW_ENV, "")
    roots.extend(Path(p).resolve() for p in extra.split(os.pathsep) if p.strip() and "\0" not in p)
    return roots


def mountable(host: str | os.PathLike[str], roots: Sequence[Path]) -> Path | None:
    """``host`` resolved, if it is one of ``roots`` or inside one; None if containers may not mount it."""
    real = Path(host).resolve()
    return real if any(real == root or root in real.parents for root in roots) else None
