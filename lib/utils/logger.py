"""Training metrics: meters, a text log, TensorBoard and ``metrics.jsonl``; silent on all but the main process."""
import json
import logging
import math
import os
from collections import defaultdict, deque

from tqdm import tqdm

from lib.utils import distributed
from lib.utils.atomic import write_text


class MetricLogger:
    """Named scalar series, each shown as the mean of its last ``window`` values and its global average."""

    def __init__(self, window=20):
        self.recent = defaultdict(lambda: deque(maxlen=window))
        self.total = defaultdict(float)
        self.count = defaultdict(int)

    def update(self, **values):
        for name, value in values.items():
            self.recent[name].append(float(value))
            self.total[name] += float(value)
            self.count[name] += 1

    def summary(self):
        """``{'loss': '0.1234', ...}`` of the windowed means, for a progress bar."""
        return {name: f'{sum(recent) / len(recent):.4f}' for name, recent in self.recent.items()}

    def __str__(self):
        return '  '.join(f'{name}: {sum(recent) / len(recent):.4f} ({self.total[name] / self.count[name]:.4f})'
                         for name, recent in self.recent.items())


class _TqdmHandler(logging.Handler):
    """Console output that does not tear an active tqdm bar."""

    def emit(self, record):
        tqdm.write(self.format(record))


def setup_text_log(log_path):
    """A logger writing to the console and to ``log_path`` (in a folder that exists)."""
    logger = logging.getLogger('davss.train')
    logger.handlers.clear()
    logger.propagate = False
    if not distributed.is_main_process():
        logger.addHandler(logging.NullHandler())
        return logger
    logger.setLevel(logging.INFO)
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter('%(message)s'))
    logger.addHandler(console)
    to_file = logging.FileHandler(log_path, mode='a')
    to_file.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S'))
    logger.addHandler(to_file)
    return logger


def close_text_log(logger):
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def keep_lines_until(path, iteration):
    """Drop the lines of the JSON-lines file ``path`` after ``iteration`` (and a torn last line)."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)['iteration'] <= iteration:
                    kept.append(line if line.endswith('\n') else line + '\n')
            except (ValueError, KeyError, TypeError):
                continue
    write_text(path, ''.join(kept))


class ScalarWriter:
    """TensorBoard scalars and one JSON line per call in ``metrics_path`` (``{"iteration": step, "<prefix><name>":
    value, ...}``; the lines after ``resume_at``, which a resumed run writes again, dropped first)."""

    def __init__(self, log_dir, metrics_path, resume_at=None):
        self.writer = self.lines = None
        if not distributed.is_main_process():
            return
        from tensorboardX import SummaryWriter
        self.writer = SummaryWriter(log_dir)
        if resume_at is not None:
            keep_lines_until(metrics_path, resume_at)
        self.lines = open(metrics_path, 'a')

    def add_scalars(self, values, step, prefix=''):
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f'{prefix}{name}', float(value), step)
        if self.lines is not None:
            row = {f'{prefix}{name}': float(value) for name, value in values.items()}
            row = {name: value if math.isfinite(value) else None for name, value in row.items()}  # strict JSON
            self.lines.write(json.dumps({'iteration': step, **row}) + '\n')
            self.lines.flush()

    def flush(self):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lines is not None:
            self.lines.close()
            self.lines = None
