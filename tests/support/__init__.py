"""Helpers shared by the test suites: engines, waiting, Docker, trigger fakes, paths.

Import them as ``from tests.support.engines import write_flow``; the fixtures are loaded for
every test by ``tests/conftest.py``.
"""
