"""Experiment configuration: YAML files merged over one schema of defaults.

Every key a config may hold is listed in ``DEFAULTS``; a key that is not there is an error (a typo must not be
silently ignored).  A file may start from others, as mmsegmentation's configs do: ``_base_: [a.yaml, b.yaml]``
(paths relative to the file) are merged first, in order, and the file then states only what differs.  Values may
name environment variables as ``${NAME}`` or ``${NAME:-default}``; relative paths are resolved against the
repository root by :func:`resolve_path`, never against the working directory.  The experiment's name (its output
folders) is ``experiment:`` or, unset, follows from the file's place (:func:`experiment_name`).
"""
import copy
import os
import re

import yaml

from lib.utils.atomic import write_text

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULTS = {
    'experiment': None,  # name; outputs go to ${SAVE_ROOT}/<experiment> and result/<experiment>
    'stage': 'correction',  # segmentation | flow | dmnet | correction
    'seed': 666,
    'deterministic': False,
    'device': 'auto',  # auto | cpu | cuda
    'model': {
        'n_classes': 19,
        # Resize convention of every 1/4 <-> full resolution resize around the propagation; training uses True.
        'align_corners': True,
        'deeplab': {'width_mult': 1.0, 'middle_blocks': 16},
        'flownet': {'width_mult': 1.0},
        'cfnet': {'width_mult': 1.0},
        # Initial weights of SCNet / SCNetDMNet (the dmnet and correction stages): 'default' is PyTorch's init plus
        # DMNet's Xavier; 'original' draws every tensor as the original's constructors did (DeepLab's and DMNet's
        # custom normal_ draws included), so ``seed`` gives the original's initial DMNet and CFNet
        # (lib/model/original_init.py).
        'init': 'default',
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
        # The intermediate frame t-i of each triplet: 'resample' draws i anew for every sample; 'original' draws it
        # once per list line and gap right after seeding Python's random with ``seed``, as the paper's code did
        # (one fixed list for all epochs, the list the published weights were trained on).
        'intermediate': 'resample',
        # Frames to [0, 1]: 'multiply' is x * (1/255); 'divide' is x / 255 as the original's transform_im (the two
        # differ by 1 ulp on 126 of the 256 byte values).
        'pixel_scaling': 'multiply',
        # Labels of the unlabelled frames t-i and t that the dmnet and correction stages learn from: 'online' runs
        # the frozen DeepLab on the training crop (the original from 148b579 on); 'precomputed' reads DeepLab's
        # full-frame argmax masks from pseudo_label_root (tools/make_pseudo_labels.py) and crops them with the
        # frames, as the code the published Cityscapes weights came from (a03c1ea) did.
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
        # Adam's parameter lists: 'unique' holds each tensor once; 'original' builds them as the paper's code did
        # (``for m in net.X.modules(): for p in m.parameters()``, every tensor once per enclosing module) and steps
        # them one tensor at a time as torch 1.5's Adam did, so each tensor takes 2-4 Adam updates per iteration
        # (docs/training.md, "The optimizer").
        'param_lists': 'unique',
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
        # BatchNorm momentum of the trained sub-networks; None keeps the networks' own (DeepLab's and DMNet's
        # separable convolutions carry the published weights' 3e-4, a fine-tuning value: a short run from scratch
        # needs PyTorch's 0.1 or eval mode sees running statistics still near their initial values).
        'bn_momentum': None,
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
        # Resize convention of the evaluation (the x1/4 and x4 resizes around the propagation); None = that of
        # model.align_corners. The paper configs set what each dataset's original test script did.
        'align_corners': None,
        'tf32': False,  # TF32 in evaluation; off = plain fp32, as the original ran
        'batch_size': 1,
        'max_clips': None,
        'result_root': '${RESULT_ROOT:-result}',
        'show_clips': [0, 1, 2],
    },
}

BASE_KEY = '_base_'  # a config's list of files merged before it
_ENV_PATTERN = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}')


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _expand_env(value):
    if isinstance(value, str):
        return _ENV_PATTERN.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ''), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _typed(default, value, path, source):
    """``value`` checked against the type of its default: a number where the default is a number (YAML reads
    ``1e-4`` as a string: such strings are converted), an integer, a boolean, a list; None and keys whose default
    is None take anything.  One-line :class:`ConfigError` otherwise."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), 'true or false'
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), 'an integer'
    elif isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), 'a number'
    elif isinstance(default, list):
        ok, expected = isinstance(value, list), 'a list'
    else:
        return value
    if not ok:
        raise ConfigError(f'{source}: "{path}" expected {expected}, got {value!r}')
    return value


def _merge(base, override, where, source):
    for key, value in override.items():
        path = f'{where}.{key}' if where else key
        if key not in base:
            raise ConfigError(f'{source}: unknown config key "{path}"')
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f'{source}: "{path}" must be a mapping, got {type(value).__name__}')
            _merge(base[key], value, path, source)
        else:
            base[key] = _typed(base[key], value, path, source)


def parse_override(text):
    """``'train.lr=1e-3'`` -> ``('train.lr', 0.001)``; the value is parsed as YAML (safe, no code)."""
    if '=' not in text:
        raise ConfigError(f'--opts: expected key=value, got "{text}"')
    key, raw = text.split('=', 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def _nest(dotted_key, value):
    nested = value
    for part in reversed(dotted_key.split('.')):
        nested = {part: nested}
    return nested


def _merge_file(cfg, path, chain=()):
    """Merge the YAML file at ``path`` into ``cfg``: its ``_base_`` files first (in order), then its own keys."""
    if not os.path.isfile(path):
        where = f' ({BASE_KEY} of {chain[-1]})' if chain else ''
        raise ConfigError(f'{path}: config file not found{where}')
    if os.path.realpath(path) in map(os.path.realpath, chain):
        raise ConfigError(f'{path}: {BASE_KEY} files include each other ({" -> ".join(chain + (path,))})')
    with open(path) as f:
        try:
            loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f'{path}: not valid YAML ({err.__class__.__name__})') from None
    if not isinstance(loaded, dict):
        raise ConfigError(f'{path}: expected a mapping at the top level')
    bases = loaded.pop(BASE_KEY, None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f'{path}: "{BASE_KEY}" expected a file name or a list of them, got {bases!r}')
    for base in bases:
        _merge_file(cfg, os.path.join(os.path.dirname(path), base), chain + (path,))
    _merge(cfg, loaded, '', path)


def experiment_name(cfg, config_path):
    """The name of the experiment's output folders: ``experiment:`` if set, else from the file's place,
    ``exp/<name>/config.yaml`` -> ``<name>`` and ``exp/<name>/<stage>.yaml`` -> ``<name>_<stage>`` (a copied
    experiment folder is a new experiment without an edit)."""
    if cfg['experiment']:
        return cfg['experiment']
    folder = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return folder if stem == 'config' else f'{folder}_{stem}'


def load_config(path=None, opts=()):
    """Defaults, then the YAML file at ``path`` (if any, with its ``_base_`` files), then ``opts``
    (``key.sub=value`` strings).  Without an ``experiment`` the name follows from ``path``
    (:func:`experiment_name`).

    Returns a plain nested dict with environment variables expanded.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge_file(cfg, path)
    for text in opts:
        key, value = parse_override(text)
        _merge(cfg, _nest(key, value), '', '--opts')
    if path is not None:
        cfg['experiment'] = experiment_name(cfg, path)
    return _expand_env(cfg)


def resolve_path(path):
    """A config path relative to the repository root (absolute paths are kept); None stays None."""
    if path is None or path == '':
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def dump_config(cfg, path):
    """Write the resolved config next to the outputs it produced (atomically)."""
    write_text(path, yaml.safe_dump(cfg, sort_keys=False))
