from __future__ import annotations

import json
import logging

from stockade.logs import JsonFormatter, about


def test_json_records_name_the_object() -> None:
    record = logging.LogRecord("stockade.syncer", logging.WARNING, __file__, 1, "refused %s", ("x",), None)
    for key, value in about("team-a", "Pod", "web", "p-1").items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "refused x" and entry["level"] == "WARNING" and entry["logger"] == "stockade.syncer"
    assert (entry["tenant"], entry["kind"], entry["namespace"], entry["name"]) == ("team-a", "Pod", "web", "p-1")


def test_about_works_as_logging_extra(caplog: object) -> None:
    logging.getLogger("stockade.test").warning("hello", extra=about("t", "Pod", "ns", "n"))  # no reserved keys
