"""The one way a command fails on bad input: :class:`UserError`, printed by :func:`lib.utils.cli.run` as
``error: <one line>`` (exit status 1); any other exception is a bug and keeps its traceback."""
import re


class UserError(Exception):
    """Bad input or a refused action; the message is one line naming the file or option and what was expected."""


def one_line(err):
    """``str(err)`` on one line; of an error re-raised from a DataLoader worker, the worker's own message."""
    text = str(err).strip()
    if 'DataLoader worker process' in text and 'Original Traceback' in text:
        lines = [line for line in text.splitlines() if line.strip()]
        match = re.match(rf'^(?:[\w.]+\.)?{re.escape(type(err).__name__)}: (.*)$', lines[-1])
        if match:
            return match.group(1)
    return text.splitlines()[0] if text else type(err).__name__

