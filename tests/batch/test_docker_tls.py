"""A compute environment on a Docker engine over TLS with client certificates, and plain TCP refused.

The endpoint is a real TLS server on 127.0.0.1 that demands a client certificate of the test's
own CA (made with openssl) and passes the connection on to the local dockerd, so the job really
runs through the TLS client: the CA, the client certificate and key, the hostname check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.batch.jobs import JobError
from engine.executors.docker_api import DockerClient, DockerError, TlsFiles
from tests.support.batch import MakeBatch, box
from tests.support.tls import TlsFront

pytestmark = pytest.mark.docker


def read(path: str) -> str:
    return Path(path).read_text()


def tls_of(front: TlsFront, *, stranger: bool = False) -> dict[str, Any]:
    c = front.certs
    cert, key = (c.stranger_cert, c.stranger_key) if stranger else (c.client_cert, c.client_key)
    return {"tls_ca": str(c.ca), "tls_cert": str(cert), "tls_key": str(key)}


async def test_a_job_runs_on_a_docker_engine_over_tls(batch: MakeBatch, docker_tls: TlsFront) -> None:
    svc = await batch()
    env = {"name": "remote", "endpoint": docker_tls.url, "max_vcpus": 2, "max_memory": 1 << 30}
    made = await svc.put_environment({**env, **tls_of(docker_tls)}, create=True)
    assert made["docker"]["tls_ca"] == str(docker_tls.certs.ca)
    await svc.put_queue({"name": "far", "priority": 1, "environments": ["remote"]}, create=True)
    out = await svc.submit({"queue": "far", "name": "tls", "container": box(["echo", "over tls"])})
    assert await svc.wait(out["job_id"], 60) == "SUCCEEDED"
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["environment"] == "remote"
    assert read(desc["attempts"][0]["log_path"]) == "over tls\n"
    assert docker_tls.connections > 0  # it went through the TLS front, not the local socket


async def test_a_certificate_of_another_ca_is_refused(batch: MakeBatch, docker_tls: TlsFront) -> None:
    files = tls_of(docker_tls, stranger=True)
    async with DockerClient(
        docker_tls.url, tls=TlsFiles(files["tls_ca"], files["tls_cert"], files["tls_key"])
    ) as c:
        with pytest.raises(DockerError):
            await c.ping()
    svc = await batch()
    env = {"name": "wrong", "endpoint": docker_tls.url, "max_vcpus": 2, "max_memory": 1 << 30, **files}
    await svc.put_environment(env, create=True)
    await svc.put_queue({"name": "far", "priority": 1, "environments": ["wrong"]}, create=True)
    out = await svc.submit({"queue": "far", "name": "nope", "container": box(["echo", "never"])})
    assert await svc.wait(out["job_id"], 60) == "FAILED"
    desc = await svc.describe(out["job_id"])
    assert desc is not None and desc["status_reason"].startswith("CannotStartContainerError: "), desc


async def test_plain_tcp_to_another_machine_needs_tls_or_insecure(
    batch: MakeBatch, docker_tls: TlsFront, tmp_path: Path
) -> None:
    svc = await batch()
    base = {"name": "far", "max_vcpus": 2, "max_memory": 1 << 30}
    with pytest.raises(JobError, match="plain TCP to another machine"):
        await svc.put_environment({**base, "endpoint": "tcp://192.0.2.10:2375"}, create=True)
    files = tls_of(docker_tls)
    cases = [
        (
            {"endpoint": docker_tls.url, "tls_ca": files["tls_ca"]},
            "give tls_ca, tls_cert and tls_key together",
        ),
        (
            {"endpoint": docker_tls.url, **files, "tls_key": str(tmp_path / "nope.pem")},
            f"got '{tmp_path / 'nope.pem'}': no such file",  # it is absolute: say what is wrong
        ),
        ({"endpoint": docker_tls.url, **files, "tls_ca": "ca.pem"}, "got 'ca.pem': not an absolute path"),
        ({"endpoint": "unix:///var/run/docker.sock", **files}, "TLS is for a tcp:// endpoint"),
        ({"endpoint": "tcp://192.0.2.10:2375", "insecure": "yes"}, "insecure: true or false"),
    ]
    for extra, message in cases:
        with pytest.raises(JobError) as err:
            await svc.put_environment({**base, **extra}, create=True)
        assert message in str(err.value), (extra, str(err.value))
    assert "far" not in svc.envs
    made = await svc.put_environment(
        {**base, "endpoint": "tcp://192.0.2.10:2375", "insecure": True}, create=True
    )
    assert made["docker"] == {"insecure": True}
    local = await svc.put_environment({**base, "name": "lo", "endpoint": "tcp://127.0.0.1:2375"}, create=True)
    assert local["endpoint"] == "tcp://127.0.0.1:2375"  # loopback: plain TCP stays allowed
