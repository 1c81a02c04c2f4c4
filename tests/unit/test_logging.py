import json
import logging
import sys

from domain.core.logging import JsonFormatter, configure_logging


def test_json_lines_carry_extras_and_exceptions():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord(
            "t",
            logging.ERROR,
            __file__,
            1,
            "failed %s",
            ("x",),
            exc_info=sys.exc_info(),
            extra={"request_id": "r1"},
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed x" and entry["request_id"] == "r1" and entry["level"] == "error"
    assert "ValueError: boom" in entry["exception"]


def test_configure_logging_installs_one_json_handler():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("WARNING")
        configure_logging("WARNING")
        json_handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(json_handlers) == 1 and root.level == logging.WARNING
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
