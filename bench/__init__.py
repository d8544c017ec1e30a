"""Sluice's benchmark harness: ``python -m bench`` (see bench/RESULTS.md and issue 6).

Importing the package registers nothing; ``bench.__main__`` imports the workload modules
(``limits``, ``peers``, ``sluice_workloads``, ``sluice_intake``, ``sluice_jobs``), so
``python -m bench.limits serve`` can run a helper process without registering every workload twice.
"""
