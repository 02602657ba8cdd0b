"""Errors meant for the person at the command line."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class UserError(Exception):
    """Bad input or setup: the message names the problem and what to do.

    Binaries print it as one line and exit with status 2, no traceback.
    """


def cli_main(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    """Wrap an absl `main(argv)` so a UserError becomes `error: ...` and exit 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> object:
        try:
            return main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
