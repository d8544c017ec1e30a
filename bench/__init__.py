"""Sluice's benchmark harness: ``python -m bench`` (see bench/RESULTS.md and issue 6).

Importing the package registers nothing; ``bench.__main__`` imports the workload modules
(``limits``, ``peers``, ``sluice_workloads``), so ``python -m bench.limits serve`` can run a helper
process without registering every workload twice.
"""
