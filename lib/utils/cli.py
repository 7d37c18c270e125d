"""What every tool shares: the config and ``--threads`` arguments, and its last line ``cli.run(main, parse_args())``."""
import argparse
import os
import sys
import warnings

import torch

from lib.utils import distributed
from lib.utils.errors import UserError, one_line

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def add_config_arguments(parser, required=True):
    """The experiment config as the first positional argument and ``--opts KEY=VALUE ...`` overrides of it."""
    parser.add_argument('config', nargs=None if required else '?', default=None,
                        help='experiment YAML, e.g. exp/spatial_correction_cityscapes/config.yaml')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                        help='config overrides, e.g. train.max_iters=100 eval.split=test')
    return parser


def default_threads():
    """The CPUs this process may use: ``OMP_NUM_THREADS`` when set, else the CPU affinity mask's size."""
    raw = os.environ.get('OMP_NUM_THREADS', '').strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f'OMP_NUM_THREADS={raw}: expected a positive number of threads')
        return int(raw)
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def positive_int(text):
    """argparse type of counts (threads, clips, frames): a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got "{text}"')
    return value


def add_threads_argument(parser):
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads of torch (default: OMP_NUM_THREADS, else the CPUs this process may use; '
                             '1 is often much faster on a shared machine)')
    return parser


def set_threads(threads=None):
    """torch's intra-op threads: ``threads``, or :func:`default_threads`."""
    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()


def run(main, args):
    """``sys.exit(main(args))``: a :class:`UserError`, a full disk or no memory as ``error: <one line>`` (exit 1),
    Ctrl-C as ``interrupted: <its message>`` (130), warnings as ``warning: <message>``."""
    shown = warnings.showwarning
    warnings.showwarning = lambda message, *rest, **kwargs: print(f'warning: {message}', file=sys.stderr)
    try:
        status = main(args)
    except UserError as err:
        print(f'error: {one_line(err)}', file=sys.stderr)
        status = EXIT_ERROR
    except KeyboardInterrupt as err:
        print(f'interrupted{": " + one_line(err) if str(err) else ""}', file=sys.stderr)
        status = EXIT_INTERRUPTED
    except OSError as err:  # the environment's failures: a full disk, a permission, a vanished file
        where = f'{err.filename}: ' if err.filename and str(err.filename) not in str(err) else ''
        print(f'error: {where}{one_line(err)}', file=sys.stderr)
        status = EXIT_ERROR
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(err):
            print(f'error: out of memory ({one_line(err)[:160]}); use smaller frames (--size) or batches',
                  file=sys.stderr)
        elif distributed.describe_failure(err):  # another process of a torchrun job hung or died
            print(f'error: {distributed.describe_failure(err)}', file=sys.stderr)
        else:
            raise
        status = EXIT_ERROR
    finally:
        warnings.showwarning = shown
        distributed.cleanup_distributed()
    sys.exit(status or 0)
