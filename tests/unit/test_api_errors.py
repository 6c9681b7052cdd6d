"""The API's log filter for requests aiohttp could not parse."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from diego.api.errors import BadRequestsInOneLine


def _record(error: BaseException | None) -> logging.LogRecord:
    exc_info = (type(error), error, None) if error is not None else None
    return logging.LogRecord(
        "diego.http", logging.ERROR, __file__, 1, "Error handling request", (), exc_info
    )


def test_a_request_aiohttp_could_not_parse_is_one_info_line() -> None:
    """The record of a BadHttpMessage loses its traceback and becomes INFO."""
    record = _record(BadHttpMessage("Invalid header value char:\nb'X: \\x00'"))
    assert BadRequestsInOneLine().filter(record)
    assert (record.levelno, record.levelname, record.exc_info) == (logging.INFO, "INFO", None)
    assert record.getMessage() == "bad-http-request Invalid header value char: b'X: \\x00'"


def test_other_errors_keep_their_traceback() -> None:
    """Any other record passes as it was."""
    error = RuntimeError("boom")
    record = _record(error)
    assert BadRequestsInOneLine().filter(record)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is error
