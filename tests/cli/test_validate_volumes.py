"""A container volume outside the host paths the engine allows is refused by ``sluice validate``.

The allow-list is the engine's: its data dir (``--data-dir``, ``$SLUICE_DATA_DIR``, ``./.sluice``)
and ``$SLUICE_VOLUME_ALLOW``. Before, such a workflow validated and its step failed at run time
with ``volume_not_allowed``; now ``validate``, ``run`` and ``serve`` refuse it when it loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

FLOW = 'name: vol\nsteps:\n  a:\n    container: {image: busybox:1.36, volumes: ["%s:/data:ro"]}\n'


def sluice(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("SLUICE_DATA_DIR", "SLUICE_VOLUME_ALLOW")}
    full.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
    )


def _flow(tmp_path: Path, host: str) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "vol.yaml").write_text(FLOW % host)
    return flows


def test_a_volume_outside_the_allow_list_is_refused_at_validate(tmp_path: Path) -> None:
    flows = _flow(tmp_path, "/etc")
    result = sluice("validate", str(flows), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr == (
        f"{flows / 'vol.yaml'}: steps.a.container.volumes[0]: host path /etc is outside the folders"
        f" containers may mount ({(tmp_path / 'data').resolve()}) (mount a folder inside one of them,"
        " or add it to SLUICE_VOLUME_ALLOW (a :-separated list))\n"
    )
    assert "Traceback" not in result.stderr
    run = sluice("run", str(flows / "vol.yaml"), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert run.returncode == 2 and "outside the folders containers may mount" in run.stderr
    assert not (tmp_path / "data" / "sluice.db").exists()  # refused before anything was written


def test_the_data_dir_and_sluice_volume_allow_are_allowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flows = _flow(tmp_path, str(data / "in"))
    assert sluice("validate", str(flows), "--data-dir", str(data), cwd=tmp_path).returncode == 0
    assert sluice("validate", str(flows), cwd=tmp_path, SLUICE_DATA_DIR=str(data)).returncode == 0
    # the default data dir is ./.sluice of the working directory, as for `sluice serve`
    assert sluice("validate", str(flows), cwd=tmp_path).returncode == 2
    elsewhere = tmp_path / "shared"
    flows = _flow(tmp_path, "../shared/x")  # relative to the workflow file
    allow = os.pathsep.join(["/nonexistent", str(elsewhere)])
    assert sluice("validate", str(flows), cwd=tmp_path).returncode == 2
    assert sluice("validate", str(flows), cwd=tmp_path, SLUICE_VOLUME_ALLOW=allow).returncode == 0
