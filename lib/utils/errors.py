"""How every command-line tool reports bad input: ``error: <one line>`` on stderr and exit status 1."""
import re
import sys

BAD_INPUT_STATUS = 1


def one_line(err):
    """``str(err)``, except that an error re-raised from a DataLoader worker process (whose text is a whole
    traceback) gives back the original message; anything left multi-line is cut to its first line."""
    text = str(err).strip()
    if 'DataLoader worker process' in text and 'Original Traceback' in text:
        lines = [line for line in text.splitlines() if line.strip()]
        match = re.match(rf'^(?:[\w.]+\.)?{re.escape(type(err).__name__)}: (.*)$', lines[-1])
        if match:
            return match.group(1)
    return text.splitlines()[0] if text else type(err).__name__


def bad_input(err):
    """Print ``err`` as every tool reports bad input (``error: <one line>`` on stderr); returns the exit status."""
    print(f'error: {one_line(err)}', file=sys.stderr)
    return BAD_INPUT_STATUS
