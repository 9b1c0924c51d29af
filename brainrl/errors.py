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


def _remote_hint(err: BaseException) -> str | None:
    """A brain server that cannot be reached or refuses the client is the user's to fix: say how."""
    from brainrl.brain.remote import TOKEN_ENV, RemoteError

    if not isinstance(err, RemoteError):
        return None
    message = one_line(err)
    if "HTTP 401" in message or "HTTP 403" in message:
        return (f"{message}. The server wants its token: --model-arg token=TOKEN (or ${TOKEN_ENV}); "
                "it is the --token given to `brainrl serve`.")
    if "cannot reach" in message:
        return (f"{message}. Is `brainrl serve` running there? Start it, or fix the URL (--model-arg url=... "
                "or model_kwargs.url in the recipe).")
    return message


def run_reporting(func: Callable[[], int], prog: str, verbose: bool) -> int:
    """``func()``; a user error becomes ``prog: error: <one line>`` on stderr and exit status 2."""
    try:
        return int(func() or 0)
    except Exception as err:
        message = one_line(err) if isinstance(err, USER_ERRORS) else _remote_hint(err)
        if message is None or verbose:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return 2
