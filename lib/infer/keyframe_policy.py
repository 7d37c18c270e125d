"""Key-frame policies: which frames of a stream go through the key-frame network (DeepLab).

The loop asks ``policy.is_key()`` before each frame and reports it with ``policy.update(key[, distortion])``.
``fixed:k`` (the paper's), ``per-frame`` and ``distortion:tau[,max=M][,stat=mean|area|pNN]``: a key frame after a
non-key frame whose distortion score exceeds tau, at the latest M frames after the last one.  The decision acts on
the next frame: re-running frame t as a key frame would pay both steps, switching at t+1 costs nothing extra.
"""
import math
import re

import torch

from lib.utils.errors import UserError

DEFAULT_MAX_INTERVAL = 10


class KeyFramePolicy:
    """Base class; subclasses decide in :meth:`is_key`. ``since_key`` counts frames since the last key frame."""

    name = 'policy'

    def __init__(self):
        self.reset()

    def reset(self):
        """Start a new stream: the next frame is a key frame."""
        self.since_key = None

    def is_key(self):
        raise NotImplementedError

    def update(self, was_key, distortion=None):
        """Record the frame just processed; ``distortion`` is DMNet's map ``(N, 1, h, w)`` of a non-key frame."""
        self.since_key = 0 if was_key else self.since_key + 1

    def __repr__(self):
        return self.name


class FixedInterval(KeyFramePolicy):
    """A key frame every ``interval`` frames."""

    def __init__(self, interval):
        if interval < 1:
            raise UserError(f'fixed:{interval}: the interval must be a positive integer')
        self.interval = interval
        self.name = f'fixed:{interval}'
        super().__init__()

    def is_key(self):
        return self.since_key is None or self.since_key + 1 >= self.interval


class PerFrame(FixedInterval):
    """Every frame is a key frame."""

    def __init__(self):
        super().__init__(1)
        self.name = 'per-frame'


def distortion_score(distortion, stat='mean'):
    """One number from a distortion map ``(N, 1, h, w)`` in [0, 1]: its mean, the fraction above 0.5 (``area``: the
    share the merge hands mostly to CFNet), or a percentile (``pNN``)."""
    values = distortion.detach().double().flatten()  # float64: a mean over a large map without rounding drift
    if stat == 'mean':
        return values.mean().item()
    if stat == 'area':
        return (values > 0.5).double().mean().item()
    return torch.quantile(values, float(stat[1:]) / 100.0).item()


class DistortionTriggered(KeyFramePolicy):
    """A new key frame when the previous frame's distortion score exceeds ``threshold``, or after ``max_interval``."""

    def __init__(self, threshold, max_interval=DEFAULT_MAX_INTERVAL, stat='mean'):
        if not 0.0 <= threshold <= 1.0:
            raise UserError(f'distortion:{threshold}: the threshold must lie in [0, 1] (DMNet outputs are in [0, 1])')
        if max_interval < 1:
            raise UserError(f'distortion: max={max_interval}: the maximum interval must be a positive integer')
        match = re.fullmatch(r'p(\d+(?:\.\d+)?)', stat)
        if stat not in ('mean', 'area') and (match is None or not 0.0 <= float(match.group(1)) <= 100.0):
            raise UserError(f'distortion: stat={stat}: expected "mean", "area" or a percentile "p0".."p100" such as '
                            '"p90"')
        self.threshold, self.max_interval, self.stat = threshold, max_interval, stat
        self.name = f'distortion:{threshold:g},max={max_interval}' + ('' if stat == 'mean' else f',stat={stat}')
        super().__init__()

    def reset(self):
        super().reset()
        self.triggered, self.last_score = False, None

    def is_key(self):
        return self.since_key is None or self.triggered or self.since_key + 1 >= self.max_interval

    def update(self, was_key, distortion=None):
        if was_key:
            self.since_key, self.triggered, self.last_score = 0, False, None
            return
        if distortion is None:
            raise ValueError(f'{self.name}: a non-key frame needs its distortion map to decide on the next frame')
        self.since_key += 1
        self.last_score = distortion_score(distortion, self.stat)
        self.triggered = self.last_score > self.threshold


def _parse_positive_int(text, where):
    try:
        value = int(text)
    except ValueError:
        raise UserError(f'{where}: expected a positive integer, got "{text}"') from None
    if value < 1:
        raise UserError(f'{where}: expected a positive integer, got {value}')
    return value


def _parse_distortion(args, text):
    parts = [p.strip() for p in args.split(',')]
    try:
        threshold = float(parts[0])
    except ValueError:
        raise UserError(f'policy "{text}": expected a threshold such as distortion:0.3, got "{parts[0]}"') from None
    if not math.isfinite(threshold):
        raise UserError(f'policy "{text}": the threshold must be a finite number')
    options = {'max': DEFAULT_MAX_INTERVAL, 'stat': 'mean'}
    for part in parts[1:]:
        key, sep, value = part.partition('=')
        if not sep or key not in options:
            raise UserError(f'policy "{text}": unknown option "{part}" (expected max=N or stat=mean|area|pNN)')
        options[key] = _parse_positive_int(value, f'policy "{text}": max') if key == 'max' else value
    return DistortionTriggered(threshold, max_interval=options['max'], stat=options['stat'])


def parse_policy(text):
    """``'fixed:5'``, ``'distortion:0.3'``, ``'distortion:0.3,max=10,stat=p90'``, ``'per-frame'`` -> a policy."""
    text = text.strip()
    kind, sep, args = text.partition(':')
    if kind == 'per-frame' and not sep:
        return PerFrame()
    if kind == 'fixed' and sep:
        return FixedInterval(_parse_positive_int(args, f'policy "{text}": interval'))
    if kind == 'distortion' and sep:
        return _parse_distortion(args, text)
    raise UserError(f'unknown key-frame policy "{text}": expected fixed:K, '
                    'distortion:TAU[,max=N][,stat=mean|area|pNN] or per-frame')

