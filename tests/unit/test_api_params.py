"""`metering serve` start-up rules: the port flag, when an open API is refused, and a
background job that outlives its failures."""

from __future__ import annotations

import argparse
import logging
import threading

import pytest

from metering.api.serve import Periodic, exposure_problem, port_number
from metering.settings import Settings


@pytest.mark.parametrize(("text", "port"), [("0", 0), ("8080", 8080), ("65535", 65535)])
def test_port_number(text: str, port: int) -> None:
    assert port_number(text) == port


@pytest.mark.parametrize("text", ["-1", "65536", "http", "", "80.5"])
def test_port_number_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a port number"):
        port_number(text)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_an_open_api_is_allowed_on_loopback(host: str) -> None:
    assert exposure_problem(Settings(api_host=host, api_tokens=())) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.com"])  # noqa: S104
def test_an_open_api_is_refused_elsewhere(host: str) -> None:
    problem = exposure_problem(Settings(api_host=host, api_tokens=()))
    assert problem is not None and f"refusing to serve on {host}" in problem
    assert exposure_problem(Settings(api_host=host, api_tokens=("secret",))) is None


def test_tokens_come_comma_separated_and_stay_secret() -> None:
    settings = Settings(api_tokens=" tok-a1 , tok-b2,,")  # type: ignore[arg-type]
    assert [token.get_secret_value() for token in settings.api_tokens] == ["tok-a1", "tok-b2"]
    assert "tok-a1" not in repr(settings)


def test_periodic_job_logs_a_failure_as_one_line_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    third = threading.Event()

    def flaky() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("store down\nsecond line")
        if len(runs) >= 3:
            third.set()

    job = Periodic(name="test job", interval=0.01, action=flaky)
    with caplog.at_level(logging.ERROR, logger="metering.api.serve"):
        job.start()
        try:
            assert third.wait(5)
        finally:
            job.stop()
    assert [record.getMessage() for record in caplog.records] == [
        "test job failed: store down second line"]
