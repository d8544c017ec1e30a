"""The chain guard reads a dotted ``detail.workflow`` as the nested field it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engines import write_flow
from workflows.errors import SpecErrors
from workflows.loader import load_dir

FLOW = """
name: {name}
triggers:
  - event:
      pattern: {{source: [sluice.run], "detail.workflow": [{upstream}]}}
steps:
  s: {{wait: 1s}}
"""


def test_a_dotted_detail_workflow_names_only_that_upstream(tmp_path: Path) -> None:
    write_flow(tmp_path, "name: a\nsteps: {s: {wait: 1s}}\n", name="a.yaml")
    write_flow(tmp_path, FLOW.format(name="b", upstream="a"), name="b.yaml")
    assert set(load_dir(tmp_path)) == {"a", "b"}


def test_a_dotted_self_start_is_still_refused(tmp_path: Path) -> None:
    write_flow(tmp_path, FLOW.format(name="b", upstream="b"), name="b.yaml")
    with pytest.raises(SpecErrors, match="workflow b starts itself"):
        load_dir(tmp_path)
