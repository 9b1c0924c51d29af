"""How command-line entry points report a user's mistake: one line naming the problem and the fix, exit
status 2, the traceback only with ``--verbose``. Shared by ``brainrl`` and ``python -m brainrl.train``
(so ``accelerate launch -m brainrl.train`` behaves the same)."""

from __future__ import annotations

import sys
from typing import Callable

#: exceptions that mean "the input was wrong" (bad recipe field, missing file, unknown name, ...)
USER_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, FileExistsError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's message without its quotes)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    message = " ".join(str(message).split())
    return message or type(err).__name__


def run_reporting(func: Callable[[], int], prog: str, verbose: bool) -> int:
    """``func()``; a user error becomes ``prog: error: <one line>`` on stderr and exit status 2."""
    try:
        return int(func() or 0)
    except USER_ERRORS as err:
        if verbose:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
        return 2
