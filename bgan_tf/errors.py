"""Errors meant for the person at the command line, and the one way binaries run.

Every binary ends with ``cli_run(main, flag_module, ...)``: absl parses the flags
(a bad flag or value is one ``error:`` line and exit 2, not absl's two-line FATAL),
``--helpshort`` lists the flags of the given modules, and a `UserError` raised anywhere
below ``main`` is printed as one line with exit status 2, no traceback.
"""

from __future__ import annotations

import errno
import functools
import sys
from types import ModuleType
from typing import Callable


class UserError(Exception):
    """Bad input or setup: the message names the problem and what to do.

    Binaries print it as one line and exit with status 2, no traceback.
    """


def is_disk_full(e: BaseException) -> bool:
    """Whether an error raised while writing means a full disk or quota: OSError ENOSPC /
    EDQUOT from Python's writes, or ResourceExhaustedError, which TensorFlow's savers
    (SaveV2) raise instead. Imports no TensorFlow: when it is not loaded, the error is not its."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(e, tf.errors.ResourceExhaustedError)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def cli_main(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    """Wrap an absl `main(argv)` so a UserError becomes `error: ...` and exit 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> object:
        try:
            return main(argv)
        except UserError as e:
            _fail(str(e))
        except MemoryError:
            _fail("out of memory; use a smaller --batch_size or fewer/smaller images")
        except OSError as e:
            # Disk full, permission denied, a path that vanished: the OS message names it.
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            _fail(f"{e.strerror or e}{where}")
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped


_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def parse_flags_or_fail(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag or value is one ``error:`` line and exit 2."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except SystemExit as e:
        # absl's --help/--helpshort/--helpfull print the help and exit 1, which scripts
        # read as a failure; asking for help is a success.
        if e.code == 1 and any(a.split("=")[0] in _HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        _fail(f"{first} (see --helpshort)")
    return []  # unreachable


def cli_run(main: Callable[[list[str]], object], *flag_modules: ModuleType) -> None:
    """Run an absl binary: key flags for --helpshort, one-line errors, exit 2."""
    from absl import app, flags

    from bgan_tf.runtime import quiet_library_logs, quiet_tensorflow_import, tune_allocator

    tune_allocator()  # before any TensorFlow work: see bgan_tf/runtime.py
    quiet_tensorflow_import()
    quiet_library_logs()  # FAISS's loader and TF's saver chatter; train --verbose brings them back

    # --helpshort lists the main module's key flags; absl keys them by sys.argv[0], which
    # is the binary for `python -m` and the wrapper for a console script alike.
    for module in flag_modules:
        for flag in flags.FLAGS.get_flags_for_module(module.__name__):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(cli_main(main), flags_parser=parse_flags_or_fail)
