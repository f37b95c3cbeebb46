"""metering.logs: one JSON object per line with the `extra` fields of the call, the text
format, level checks, and no secret of the Settings in anything printed or logged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from metering.local.services import free_port
from metering.logs import QUIET_LOGGERS, TEXT_FORMAT, JsonFormatter, configure, logging_config
from metering.settings import Settings

PASSWORD = "hunter2-s3cret"  # noqa: S105 - a fake secret that must never be shown
TOKENS = ("tok-alpha-0001", "tok-bravo-0002")
METERING = str(Path(sys.executable).with_name("metering"))


def record(message: str = "batch done", *args: object, level: int = logging.INFO,
           extra: dict[str, Any] | None = None, exc_info: Any = None) -> logging.LogRecord:
    logger = logging.getLogger("metering.stream.app")
    return logger.makeRecord(logger.name, level, __file__, 42, message, args,
                             exc_info, extra=extra)


def formatted(rec: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(rec)
    assert "\n" not in line  # one object per line, whatever the message holds
    parsed: dict[str, Any] = json.loads(line)
    return parsed


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() replaces the root handlers; give the next test the logging it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in quiet.items():
            logging.getLogger(name).setLevel(was)


def secret_settings(**overrides: Any) -> Settings:
    # As METERING_API_TOKENS carries them: one comma-separated string.
    return Settings.model_validate({
        "store_url": f"clickhouse://metering:{PASSWORD}@db.internal:9000/metering",
        "api_tokens": ",".join(TOKENS), **overrides,
    })


# ---- JsonFormatter -------------------------------------------------------------------------


def test_json_line_has_time_level_logger_message() -> None:
    rec = record("batch of %d done", 3)
    entry = formatted(rec)
    assert entry == {
        "time": datetime.fromtimestamp(rec.created, UTC).isoformat(timespec="milliseconds"),
        "level": "info", "logger": "metering.stream.app", "message": "batch of 3 done",
    }
    assert entry["time"].endswith("+00:00")


def test_extra_fields_are_included() -> None:
    entry = formatted(record(
        "event rejected: %s", "invalid_json",
        extra={"team": "team-acme", "topic": "activity-events", "partition": 3, "offset": 41,
               "reason": "invalid_json", "partitions": [1, 3], "offsets": [[7, 8], [39, 45]]},
    ))
    assert entry["message"] == "event rejected: invalid_json"
    assert (entry["team"], entry["topic"], entry["partition"], entry["offset"]) == (
        "team-acme", "activity-events", 3, 41)
    assert entry["reason"] == "invalid_json"
    assert (entry["partitions"], entry["offsets"]) == ([1, 3], [[7, 8], [39, 45]])


def test_standard_record_attributes_stay_out() -> None:
    entry = formatted(record())
    for attribute in ("args", "msg", "pathname", "lineno", "funcName", "process", "thread",
                      "created", "msecs", "levelno", "exc_info", "exc_text", "stack_info"):
        assert attribute not in entry


def test_extra_values_json_cannot_hold_are_written_as_text() -> None:
    entry = formatted(record(extra={"path": Path("/tmp/x"), "when": datetime(2026, 8, 4)}))
    assert (entry["path"], entry["when"]) == ("/tmp/x", "2026-08-04 00:00:00")


def test_extra_cannot_overwrite_the_standard_fields() -> None:
    entry = formatted(record(extra={"level": "fake", "logger": "fake", "time": "fake"}))
    assert (entry["level"], entry["logger"]) == ("info", "metering.stream.app")
    assert entry["time"] != "fake"


def test_exception_field_holds_the_traceback() -> None:
    try:
        raise ZeroDivisionError("division by zero in a batch")
    except ZeroDivisionError:
        rec = record("store write failed", level=logging.ERROR, exc_info=sys.exc_info())
    entry = formatted(rec)
    assert entry["level"] == "error"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero in a batch" in entry["exception"]
    assert "exception" not in formatted(record())


def test_stack_field_when_asked() -> None:
    logger = logging.getLogger("metering.test")
    rec = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "here", (), None,
                            sinfo="Stack (most recent call last):\n  frame")
    assert formatted(rec)["stack"].startswith("Stack (most recent call last):")


def test_multiline_and_non_ascii_messages_stay_on_one_line() -> None:
    entry = formatted(record("first\nsecond – Zürich %d", 1))
    assert entry["message"] == "first\nsecond – Zürich 1"


# ---- logging_config / configure ------------------------------------------------------------


def test_json_config_writes_one_object_per_line_to_stderr(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(Settings(log_level="info", log_format="json"))
    log = logging.getLogger("metering.test")
    log.info("first %s", "line", extra={"partition": 0, "offset": 5})
    log.debug("below the level")
    log.warning("second")
    logging.getLogger("kafka.conn").error("a client library refusing a connection")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["first line", "second"]
    first = json.loads(lines[0])
    assert (first["level"], first["partition"], first["offset"]) == ("info", 0, 5)


def test_text_config(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    config = logging_config(Settings(log_level="debug", log_format="text"))
    assert config["formatters"]["metering"] == {"format": TEXT_FORMAT}
    assert config["root"]["level"] == "DEBUG"
    configure(Settings(log_level="debug", log_format="text"))
    logging.getLogger("metering.test").debug("plain %s", "words", extra={"partition": 1})
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" DEBUG metering.test: plain words")
    assert not line.startswith("{")


def test_json_config_shape() -> None:
    config = logging_config(Settings(log_level="WARNING"))
    assert config["formatters"]["metering"] == {"()": JsonFormatter}
    assert config["handlers"]["stderr"]["stream"] == "ext://sys.stderr"
    assert config["root"] == {"level": "WARNING", "handlers": ["stderr"]}
    assert config["disable_existing_loggers"] is False
    assert {name: c["level"] for name, c in config["loggers"].items()} == {
        name: "CRITICAL" for name in QUIET_LOGGERS}
    assert Settings().log_format == "json"


@pytest.mark.parametrize("level", ["verbose", "warn", "", "trace"])
def test_unknown_level_is_a_value_error(level: str) -> None:
    with pytest.raises(ValueError, match=f"unknown level {level!r}: use one of debug, info"):
        logging_config(Settings(log_level=level))


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error", "critical"])
def test_known_levels_in_any_case(level: str) -> None:
    assert logging_config(Settings(log_level=level))["root"]["level"] == level.upper()


# ---- no secrets ----------------------------------------------------------------------------


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text, text
    for token in TOKENS:
        assert token not in text, text


def test_settings_repr_and_str_hide_password_and_tokens() -> None:
    settings = secret_settings()
    assert [t.get_secret_value() for t in settings.api_tokens] == list(TOKENS)  # still usable
    assert PASSWORD in settings.store_url
    for shown in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert_no_secret(shown)
        assert "clickhouse://metering:***@db.internal:9000/metering" in shown
    assert_no_secret(repr(settings.api_tokens))


def test_settings_printed_hides_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    print(secret_settings())
    assert_no_secret(capsys.readouterr().out)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_settings_logged_hide_secrets(
    restore_logging: None, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    settings = secret_settings(log_level="debug", log_format=log_format)
    configure(settings)
    log = logging.getLogger("metering.test")
    log.info("starting with %s", settings)
    log.info("starting with %r", settings, extra={"settings": settings,
                                                   "tokens": settings.api_tokens})
    err = capsys.readouterr().err
    assert err.count("starting with") == 2
    assert_no_secret(err)


def test_password_without_user_and_with_odd_characters_is_hidden() -> None:
    for url, shown in [
        (f"clickhouse://:{PASSWORD}@h:9000/db", "clickhouse://:***@h:9000/db"),
        (f"clickhouse://u:{PASSWORD}%40x@h:9000/db", "clickhouse://u:***@h:9000/db"),
        ("clickhouse://u@h:9000/db", "clickhouse://u@h:9000/db"),
    ]:
        text = repr(Settings(store_url=url))
        assert_no_secret(text)
        assert repr(shown) in text


def test_command_line_failures_do_not_show_the_password(tmp_path: Path) -> None:
    """An unreachable store is reported in one line, debug logging on, no password in it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update({
        "METERING_STORE_URL": f"clickhouse://metering:{PASSWORD}@127.0.0.1:{free_port()}/db",
        "METERING_BROKER_URL": f"kafka://127.0.0.1:{free_port()}",
        "METERING_API_TOKENS": ",".join(TOKENS),
        "METERING_LOG_LEVEL": "debug",
        "METERING_WORK_DIR": str(tmp_path / "work"),
    })
    for args in (["usage", "--team", "t"], ["worker"]):
        result = subprocess.run([METERING, *args], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode != 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "metering: error: " in result.stderr
        assert_no_secret(result.stdout + result.stderr)
