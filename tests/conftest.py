"""The suite's fixtures come from tests/support/ (engines, Docker); helpers are imported from there."""

pytest_plugins = [
    "tests.support.engines",
    "tests.support.docker",
    "tests.support.docker_b",
    "tests.support.podman",
    "tests.support.http",
    "tests.support.batch",
    "tests.support.files",
    "tests.support.aws",
    "tests.support.slurm",
    "tests.support.tls",
    "tests.support.ssh",
]
