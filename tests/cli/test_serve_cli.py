"""`brainrl serve` options that are checked before any model loads (the server itself: tests/brain/test_server.py)."""

from brainrl.cli.main import main


def test_serve_limits_are_checked_with_one_line_errors(capsys):
    assert main(["serve", "--port", "0", "--limit", "max_itemz=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown --limit max_itemz" in err and "max_items" in err and "Traceback" not in err
    assert main(["serve", "--port", "0", "--limit", "max_items=0"]) == 2
    assert "max_items must be a positive number" in capsys.readouterr().err
