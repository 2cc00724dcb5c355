"""The check every refused start shares: stderr is one line, with no traceback or terminal codes."""

import pytest


def one_line(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """The captured stderr, asserted to be one line holding each of `expected`."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "\x1b" not in err, err
    for text in expected:
        assert text in err, err
    return err
