"""Dates on the `metering` command line (metering/cli/main.py): every date or moment lies, in
UTC, within FIRST_DATE..LAST_DATE (schemas/limits.py), checked when the line is parsed, so a
date the store cannot hold is argparse's usage error, not a traceback; and a close as of a
moment later than now plus the skew is refused, naming --rehearsal, before anything opens."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from metering import logs
from metering.cli import commands
from metering.cli.commands import CliUsageError
from metering.cli.main import build_parser, main, parse_moment
from metering.settings import Settings
from schemas import DEFAULT_MAX_FUTURE_SKEW

RANGE = "is outside 1971-01-01..2104-12-31, the dates the store holds"
END_OF_DAY = (23, 59, 59, 999_999)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("1971-01-01", datetime(1971, 1, 1, *END_OF_DAY, tzinfo=UTC)),
        ("2104-12-31", datetime(2104, 12, 31, *END_OF_DAY, tzinfo=UTC)),
        ("20260804", datetime(2026, 8, 4, *END_OF_DAY, tzinfo=UTC)),  # a date, basic format
        ("1971-01-01T00:00:00", datetime(1971, 1, 1, tzinfo=UTC)),
        ("2104-12-31T23:59:59Z", datetime(2104, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2104-12-31T20:00:00-03:00",
         datetime(2104, 12, 31, 20, tzinfo=timezone(timedelta(hours=-3)))),
        ("1971-01-01T09:00:00+09:00",
         datetime(1971, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))),
    ],
)
def test_moments_within_the_range(text: str, moment: datetime) -> None:
    parsed = parse_moment(text)
    assert (parsed, parsed.utcoffset()) == (moment, moment.utcoffset())


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("9999-12-31", "date 9999-12-31"),
        ("0001-01-01", "date 0001-01-01"),
        ("1970-12-31", "date 1970-12-31"),
        ("2105-01-01", "date 2105-01-01"),
        ("1969-07-20T20:17:40Z", "date 1969-07-20"),
        ("0001-01-01T00:00:00", "date 0001-01-01"),
        ("2104-12-31T23:00:00-05:00", "UTC date 2105-01-01"),
        ("1971-01-01T00:30:00+01:00", "UTC date 1970-12-31"),
        # shifted to UTC these leave datetime's own range
        ("9999-12-31T23:59:59-05:00", "date 9999-12-31"),
        ("0001-01-01T00:00:00+05:00", "date 0001-01-01"),
    ],
)
def test_moments_outside_the_range(text: str, shown: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        parse_moment(text)
    assert str(caught.value) == f"{shown} {RANGE}"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["close", "--as-of", "9999-12-31"], "--as-of"),
        (["close", "--as-of", "2104-12-31T23:00:00-05:00", "--rehearsal"], "--as-of"),
        (["usage", "--team", "t", "--at", "0001-01-01"], "--at"),
    ],
)
def test_a_date_out_of_range_is_a_usage_error(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.startswith(f"usage: metering {argv[0]} ")
    last = err.splitlines()[-1]
    assert last.startswith(f"metering {argv[0]}: error: argument {flag}: ")
    assert last.endswith(RANGE)


def test_every_date_option_is_parsed_and_checked() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dated = {(name, option) for name, parser in sub.choices.items() for action in parser._actions
             for option in action.option_strings if action.type is parse_moment}
    assert dated == {("close", "--as-of"), ("usage", "--at")}


def _close_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["close", *argv])


def test_a_close_ahead_of_now_is_refused_before_anything_opens(tmp_path: Path) -> None:
    store = tmp_path / "store"
    settings = Settings(store_url=f"chdb://{store}", catalog=tmp_path / "missing.yaml",
                        broker_url="kafka://127.0.0.1:1")
    ahead = datetime.now(UTC) + DEFAULT_MAX_FUTURE_SKEW + timedelta(minutes=1)
    for as_of in ("2027-12-31", ahead.isoformat()):
        with pytest.raises(CliUsageError) as caught:
            commands.close(_close_args("--as-of", as_of, "--json"), settings)
        message = str(caught.value)
        assert message.startswith("--as-of ") and "later than now" in message
        assert "--rehearsal" in message and "\n" not in message
    assert not store.exists()  # nor was the missing catalog read


def test_a_close_ahead_of_now_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs, "configure", lambda _settings: None)  # the test's logging stays
    with pytest.raises(SystemExit) as caught:
        main(["close", "--as-of", "2104-12-31", "--store", f"chdb://{tmp_path / 'store'}",
              "--broker", "kafka://127.0.0.1:1"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    line, = err.splitlines()
    assert line.startswith("metering: error: --as-of 2104-12-31T23:59:59.999999+00:00 is "
                           "later than now (")
    assert line.endswith("pass --rehearsal to see what a close would issue, with nothing "
                         "stored or published")


def test_a_closed_output_pipe_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`metering close --json | head` used to end in a BrokenPipeError traceback."""
    def closed_pipe(_args: argparse.Namespace, _settings: Settings) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(logs, "configure", lambda _settings: None)
    monkeypatch.setattr(commands, "usage", closed_pipe)
    with pytest.raises(SystemExit) as caught:
        main(["usage", "--team", "acme", "--store", f"chdb://{tmp_path / 'store'}"])
    assert caught.value.code == 1
    line, = capsys.readouterr().err.splitlines()
    assert line == ("metering: error: the output was closed before the command finished "
                    "(broken pipe)")
