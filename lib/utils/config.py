"""Experiment configuration: YAML files (``_base_: [a.yaml, ...]`` merged first, as in mmsegmentation) over one
schema of defaults; an unknown key is an error, ``${NAME}`` / ``${NAME:-default}`` name environment variables."""
import copy
import functools
import math
import os
import re

import yaml

from lib.utils.atomic import write_text
from lib.utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULTS = {
    'experiment': None,  # name; outputs go to ${SAVE_ROOT}/<experiment> and result/<experiment>
    'stage': 'correction',  # segmentation | flow | dmnet | correction
    'seed': 666,
    'deterministic': False,
    'device': 'auto',  # auto | cpu | cuda
    'model': {
        'n_classes': 19,
        'align_corners': True,  # of every 1/4 <-> full resolution resize around the propagation
        'deeplab': {'width_mult': 1.0, 'middle_blocks': 16},
        'flownet': {'width_mult': 1.0},
        'cfnet': {'width_mult': 1.0},
        'init': 'default',  # 'original': every tensor drawn as the original's constructors (lib/model/original_init.py)
    },
    'data': {
        'name': 'cityscapes',  # cityscapes | camvid | synthetic
        'root': '${CITYSCAPES_ROOT:-data/cityscapes}',  # one variable per dataset: CITYSCAPES_ROOT, CAMVID_ROOT, ...
        'train_list': 'data/list/cityscapes/train.txt',
        'val_list': 'data/list/cityscapes/val.txt',
        'test_list': None,
        'crop_size': [512, 1024],
        'hflip': False,
        'scale_range': [1.0, 1.0],  # random rescale of the image dataset (segmentation stage)
        'min_gap': 2,  # training triplets: key = t - j for j in [min_gap, max_gap]
        'max_gap': 10,
        'intermediate': 'resample',  # triplet frame t-i drawn per sample; 'original': once per list line, as the paper
        'pixel_scaling': 'multiply',  # x * (1/255); 'divide': x / 255 as the original's transform_im (1 ulp apart)
        # Shuffle from (seed, epoch); 'epoch_only': from the epoch, as torch 1.5's DistributedSampler did.
        'sampler_seed': 'run',
        # Labels of frames t-i and t: 'online' = the frozen DeepLab on the crop (the original from 148b579 on);
        # 'precomputed' = masks in pseudo_label_root (tools/make_pseudo_labels.py), as a03c1ea (published weights).
        'pseudo_labels': 'online',
        'pseudo_label_root': None,
        'num_workers': 4,
        'pin_memory': True,
    },
    'init': {
        'pretrained': None,  # DeepLab + FlowNet checkpoint (published pretrained_<dataset>.pth), loaded non-strictly
        'deeplab': None,  # a checkpoint holding the key-frame network (segmentation stage output)
        'flownet': None,  # a checkpoint holding FlowNetS (flow stage output)
        'dmnet': None,  # a trained DMNet (dmnet stage output, or the published DMNet-only file)
    },
    'train': {
        'epochs': 100,
        'max_iters': None,  # stop after this many iterations (overrides epochs for quick runs)
        'batch_size': 4,  # per GPU / per process
        'accumulate': 1,  # gradient accumulation steps
        'lr': 1.0e-4,
        'cfnet_lr': 1.0e-4,
        'betas': [0.9, 0.999],
        'weight_decay': 0.0,
        'param_lists': 'unique',  # 'original': each tensor once per enclosing module, as the paper (docs/training.md)
        'tf32': False,  # TF32 convolutions and matmuls on Ampere+ GPUs: faster, not the fp32 the paper ran
        'lr_decay_at': 0.5,  # fraction of the total iterations after which lr is multiplied by lr_decay
        'lr_decay': 0.1,
        'amp': None,  # None | bf16 | fp16
        'channels_last': False,
        'val_every': 5,  # epochs
        'val_split': 'val',  # which list selects best.pth: val | test | train
        'val_distances': [1, 5, 9],
        'val_max_clips': None,
        'val_batch_size': 1,  # per process, validation loaders
        'checkpoint_every': 0,  # also write now.pth every this many iterations (0: at epoch ends only)
        'bn_momentum': None,  # None keeps the networks' own 3e-4, a fine-tuning value (from scratch needs 0.1)
        'find_unused_parameters': False,  # DistributedDataParallel option; only for networks with idle branches
        'log_every': 10,
        'save_root': '${SAVE_ROOT:-saved_model}',
        'tblog_root': '${TBLOG_ROOT}',  # empty: the events go next to the checkpoints (save_root)
    },
    'eval': {
        'split': 'val',
        'distances': [1, 2, 3, 4, 5, 6, 7, 8, 9],
        'per_frame': True,  # the key network on frame t (upper bound row)
        'propagation_only': True,  # propagation without correction (DFF-style row)
        'align_corners': None,  # a bool or a list of them, each reported (the first: headline); None: the model's
        'tf32': False,  # TF32 in evaluation; off = plain fp32, as the original ran
        'batch_size': 1,
        'max_clips': None,
        'result_root': '${RESULT_ROOT:-result}',
        'show_clips': [0, 1, 2],
    },
}

BASE_KEY = '_base_'  # a config's list of files merged before it
_ENV_PATTERN = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')
STAGES = ('segmentation', 'flow', 'dmnet', 'correction')
DATASET_CLASSES = {'cityscapes': 19, 'synthetic': 19, 'camvid': 11}
PDA_CLIP_LENGTH = 10  # key frames t-9 .. t-1 and the labelled frame t: distances 1..9


class _Expected(Exception):
    """A value that breaks its rule; the text says what was expected."""


def _rule(ok, expected):
    """A check that returns the value if ``ok(value)``, else raises ``expected``."""
    def check(value):
        if not ok(value):
            raise _Expected(expected)
        return value
    return check


def _whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(low, optional=False):
    return _rule(lambda v: (v is None and optional) or (_whole(v) and v >= low),
                 f'an integer >= {low}' + (' or null' if optional else ''))


def _number(low=None, high=None, low_open=False, high_open=False, optional=False):
    def check(value):
        if value is None and optional:
            return value
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (low is None or value > low or (value == low and not low_open)) and (
            high is None or value < high or (value == high and not high_open))
        if not ok:
            bounds = (f' in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}' if high is not None
                      else f' {">" if low_open else ">="} {low}' if low is not None else '')
            raise _Expected(f'a number{bounds}' + (' or null' if optional else ''))
        return value
    return check


def _choice(*options):
    return _rule(lambda v: v in options, ' | '.join('null' if o is None else str(o) for o in options))


def _pair(rule, optional=False):
    def check(value):
        if value is None and optional:
            return value
        try:
            if not isinstance(value, list) or len(value) != 2:
                raise _Expected('')
            return [rule(v) for v in value]
        except _Expected as inner:
            raise _Expected('a list of two values' + (f', each {inner}' if str(inner) else '')
                            + (', or null' if optional else '')) from None
    return check


def _text(optional=False):
    return _rule(lambda v: (v is None and optional) or (isinstance(v, str) and (optional or v.strip())),
                 'a path or empty' if optional else 'a non-empty path')


_boolean = _rule(lambda v: isinstance(v, bool), 'true or false')
_distances = _rule(lambda v: isinstance(v, list) and v and all(_whole(d) and 1 <= d < PDA_CLIP_LENGTH for d in v),
                   f'a non-empty list of whole distances in 1..{PDA_CLIP_LENGTH - 1}')
_conventions = _rule(lambda v: v is None or isinstance(v, bool) or (
    isinstance(v, list) and v and all(isinstance(b, bool) for b in v) and len(set(v)) == len(v)),
    'true, false, null or a list of distinct true/false such as [false, true]')
_indices = _rule(lambda v: isinstance(v, list) and all(_whole(i) and i >= 0 for i in v), 'a list of clip indices >= 0')
# An experiment name is one path component, so that its folders stay inside the configured roots.
_name = _rule(lambda v: v is None or (isinstance(v, str) and v not in ('', '.', '..') and '/' not in v
                                      and '\\' not in v and not v.startswith('-') and v == v.strip()),
              'a name of one path component (letters, digits, "_", "-", "."; no "/" and not "..")')
_device = _rule(lambda v: isinstance(v, str) and re.fullmatch(r'auto|cpu|cuda(:\d+)?', v), 'auto | cpu | cuda | cuda:N')

_POSITIVE, _COUNT, _WIDTH = _integer(1), _integer(0), _number(0, low_open=True)
# Every key of DEFAULTS and what it may hold; checked after the files, the overrides and the environment.
RULES = {
    'experiment': _name, 'stage': _choice(*STAGES), 'seed': _COUNT, 'deterministic': _boolean, 'device': _device,
    'model.n_classes': _POSITIVE, 'model.align_corners': _boolean,
    'model.deeplab.width_mult': _WIDTH, 'model.deeplab.middle_blocks': _POSITIVE,
    'model.flownet.width_mult': _WIDTH, 'model.cfnet.width_mult': _WIDTH, 'model.init': _choice('default', 'original'),
    'data.name': _choice(*DATASET_CLASSES), 'data.root': _text(), 'data.train_list': _text(optional=True),
    'data.val_list': _text(optional=True), 'data.test_list': _text(optional=True),
    'data.crop_size': _pair(_integer(4), optional=True), 'data.hflip': _boolean,
    'data.scale_range': _pair(_number(0, low_open=True)), 'data.min_gap': _POSITIVE, 'data.max_gap': _POSITIVE,
    'data.intermediate': _choice('resample', 'original'), 'data.pixel_scaling': _choice('multiply', 'divide'),
    'data.sampler_seed': _choice('run', 'epoch_only'),
    'data.pseudo_labels': _choice('online', 'precomputed'), 'data.pseudo_label_root': _text(optional=True),
    'data.num_workers': _COUNT, 'data.pin_memory': _boolean,
    'init.pretrained': _text(optional=True), 'init.deeplab': _text(optional=True),
    'init.flownet': _text(optional=True), 'init.dmnet': _text(optional=True),
    'train.epochs': _POSITIVE, 'train.max_iters': _integer(1, optional=True), 'train.batch_size': _POSITIVE,
    'train.accumulate': _POSITIVE, 'train.lr': _WIDTH, 'train.cfnet_lr': _WIDTH,
    'train.betas': _pair(_number(0, 1, high_open=True)), 'train.weight_decay': _number(0),
    'train.param_lists': _choice('unique', 'original'), 'train.tf32': _boolean,
    'train.lr_decay_at': _number(0, 1), 'train.lr_decay': _number(0, 1, low_open=True),
    'train.amp': _choice(None, 'bf16', 'fp16'), 'train.channels_last': _boolean, 'train.val_every': _COUNT,
    'train.val_split': _choice('train', 'val', 'test'), 'train.val_distances': _distances,
    'train.val_max_clips': _integer(1, optional=True), 'train.val_batch_size': _POSITIVE,
    'train.checkpoint_every': _COUNT, 'train.bn_momentum': _number(0, 1, low_open=True, optional=True),
    'train.find_unused_parameters': _boolean, 'train.log_every': _POSITIVE, 'train.save_root': _text(),
    'train.tblog_root': _text(optional=True),
    'eval.split': _choice('train', 'val', 'test'), 'eval.distances': _distances, 'eval.per_frame': _boolean,
    'eval.propagation_only': _boolean, 'eval.align_corners': _conventions, 'eval.tf32': _boolean,
    'eval.batch_size': _POSITIVE, 'eval.max_clips': _integer(1, optional=True), 'eval.result_root': _text(),
    'eval.show_clips': _indices,
}


def _cross_checks(cfg):
    """Rules between keys: (key, message) of the first one broken, or None."""
    data, train = cfg['data'], cfg['train']
    expected = DATASET_CLASSES[data['name']]
    if cfg['model']['n_classes'] != expected:
        return 'model.n_classes', f'{cfg["model"]["n_classes"]}, but data.name={data["name"]} has {expected} classes'
    if data['crop_size'] and any(side % 4 for side in data['crop_size']):
        return 'data.crop_size', f'{data["crop_size"]}: the networks need sides that are multiples of 4'
    if data['min_gap'] > data['max_gap']:
        return 'data.min_gap', f'{data["min_gap"]} is larger than data.max_gap={data["max_gap"]}'
    if data['scale_range'][0] > data['scale_range'][1]:
        return 'data.scale_range', f'{data["scale_range"]}: expected [low, high] with low <= high'
    if cfg['stage'] == 'segmentation' and train['batch_size'] < 2:
        return 'train.batch_size', ('1 in the segmentation stage: BatchNorm over the 1x1 image pooling of ASPP needs '
                                    'at least 2 samples per process')


def validate(cfg, source):
    """Check every value against :data:`RULES`; a one-line :class:`UserError` names ``source`` and the key."""
    for key, rule in RULES.items():
        *parents, leaf = key.split('.')
        section = functools.reduce(dict.__getitem__, parents, cfg)
        try:
            section[leaf] = rule(section[leaf])
        except _Expected as expected:
            raise UserError(f'{source}: {key}: expected {expected}, got {section[leaf]!r}') from None
    broken = _cross_checks(cfg)
    if broken:
        raise UserError(f'{source}: {broken[0]}: {broken[1]}')
    return cfg


def _expand_env(value):
    """``${NAME}`` and ``${NAME:-default}`` as in bash: the default also replaces an empty value."""
    if isinstance(value, str):
        return _ENV_PATTERN.sub(lambda m: os.environ.get(m.group(1)) or m.group(2) or '', value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _merge(base, override, where, source):
    for key, value in override.items():
        path = f'{where}.{key}' if where else key
        if key not in base:
            raise UserError(f'{source}: unknown config key "{path}"')
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise UserError(f'{source}: "{path}" must be a mapping, got {type(value).__name__}')
            _merge(base[key], value, path, source)
        elif isinstance(value, dict):
            raise UserError(f'{source}: "{path}" is a value, not a mapping')
        else:
            base[key] = value


def parse_override(text):
    """``'train.lr=1e-3'`` -> ``('train.lr', 0.001)``; the value is parsed as YAML (safe, no code)."""
    if '=' not in text:
        raise UserError(f'--opts: expected key=value, got "{text}"')
    key, raw = text.split('=', 1)
    try:
        return key.strip(), yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as err:
        raise UserError(f'--opts {text}: the value is not valid YAML ({_yaml_problem(err)})') from None


class _Loader(yaml.SafeLoader):
    """YAML without aliases: a config needs none, and nested aliases expand exponentially."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f'aliases (*name) are not allowed in configs (line {mark.line + 1})')
        return super().compose_node(parent, index)


def _yaml_problem(err):
    mark = getattr(err, 'problem_mark', None)
    what = getattr(err, 'problem', None) or str(err)
    return f'{what}, line {mark.line + 1}' if mark is not None else what


def _merge_file(cfg, path, chain=()):
    """Merge the YAML file at ``path`` into ``cfg``: its ``_base_`` files first (in order), then its own keys."""
    if not os.path.isfile(path):
        where = f' ({BASE_KEY} of {chain[-1]})' if chain else ''
        raise UserError(f'{path}: config file not found{where}')
    if os.path.realpath(path) in map(os.path.realpath, chain):
        raise UserError(f'{path}: {BASE_KEY} files include each other ({" -> ".join(chain + (path,))})')
    try:
        with open(path, encoding='utf-8') as f:
            loaded = yaml.load(f, Loader=_Loader) or {}
    except UnicodeDecodeError:
        raise UserError(f'{path}: not UTF-8 text; save the config as UTF-8') from None
    except yaml.YAMLError as err:
        raise UserError(f'{path}: not valid YAML ({_yaml_problem(err)})') from None
    if not isinstance(loaded, dict):
        raise UserError(f'{path}: expected a mapping at the top level')
    bases = loaded.pop(BASE_KEY, None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f'{path}: "{BASE_KEY}" expected a file name or a list of them, got {bases!r}')
    for base in bases:
        _merge_file(cfg, os.path.join(os.path.dirname(path), base), chain + (path,))
    _merge(cfg, loaded, '', path)


def experiment_name(cfg, config_path):
    """``experiment:`` if set, else ``exp/<name>/config.yaml`` -> ``<name>``, ``exp/<name>/<stage>.yaml`` ->
    ``<name>_<stage>`` (a copied experiment folder is a new experiment without an edit)."""
    if cfg['experiment']:
        return cfg['experiment']
    folder = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return folder if stem == 'config' else f'{folder}_{stem}'


def load_config(path=None, opts=()):
    """Defaults, then the file at ``path`` (if any), then ``opts`` (``key.sub=value``): a nested dict, environment
    variables expanded, every value checked."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge_file(cfg, path)
    for text in opts:
        key, value = parse_override(text)
        nested = functools.reduce(lambda inner, part: {part: inner}, reversed(key.split('.')), value)
        _merge(cfg, nested, '', '--opts')
    if path is not None:
        cfg['experiment'] = experiment_name(cfg, path)
    return validate(_expand_env(cfg), path or '--opts')


def resolve_path(path):
    """A config path relative to the repository root (absolute paths are kept); None stays None."""
    if not path:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def dump_config(cfg, path):
    """Write the resolved config next to the outputs it produced (atomically)."""
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))
