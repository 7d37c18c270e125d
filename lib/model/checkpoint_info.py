"""What a checkpoint file is: its format, the networks it holds (kind: ``scnet``, ``scnet_dmnet``, ``dmnet_only``,
``pretrained``, ``deeplab``, ``flownet``; docs/models.md), their class count, whether their layout fits the project's
networks, and which config or command uses it (``tools/inspect_checkpoint.py``).  A file of ``tools/train.py`` is
compared with the config it carries and gets its experiment's command."""
import glob
import hashlib
import os
import zipfile
from collections import Counter

import torch

from lib.model.checkpoint import (SUB_NETWORKS, WRAPPER_PREFIXES, compare, non_finite, read_checkpoint, state_dict_of,
                                  strip_wrapper_prefixes, submodule_weights)
from lib.model.dmnet import DMNet
from lib.model.scnet import SCNet
from lib.utils.config import REPO_ROOT, load_config, resolve_path
from lib.utils.errors import UserError

DATASETS = {19: 'cityscapes', 11: 'camvid'}
KINDS = {frozenset(SUB_NETWORKS): 'scnet', frozenset({'deeplab', 'flownet', 'dmnet'}): 'scnet_dmnet',
         frozenset({'deeplab', 'flownet'}): 'pretrained', frozenset({'deeplab'}): 'deeplab',
         frozenset({'flownet'}): 'flownet'}
# What each training stage saves (in the order the stages run), and the init: key its file fills in later stages.
STAGE_KINDS = {'segmentation': 'deeplab', 'flow': 'flownet', 'dmnet': 'scnet_dmnet', 'correction': 'scnet'}
STAGE_INIT = {'segmentation': 'deeplab', 'flow': 'flownet', 'dmnet': 'dmnet'}
CLASSIFIERS = ('deeplab.logits.weight', 'cfnet.predict_cc.weight')  # the tensors whose first dimension is C


def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def _reference(n_classes, model_cfg):
    """SCNet(n_classes) with the widths of ``model_cfg`` (published by default), on the meta device (no memory)."""
    widths = {k: dict((model_cfg or {}).get(k) or {}) for k in ('deeplab', 'flownet', 'cfnet')}
    with torch.device('meta'):
        return SCNet(n_classes=n_classes, **widths)


def uses(kind, dataset):
    """Where a file of this kind goes and what reads it."""
    if kind == 'flownet':
        return 'init.flownet of a dmnet or correction stage (python tools/train.py CONFIG --opts init.flownet=FILE)'
    if dataset is None or kind == 'unknown':
        return 'no published role recognised'
    return {
        'deeplab': f'init.deeplab of exp/dmnet_{dataset} and exp/spatial_correction_{dataset}',
        'scnet': f'CHECKPOINT=<file> bash exp/spatial_correction_{dataset}/script/test_PDA.sh (or show.sh); '
                 f'published as spatial_correction_{dataset}',
        'scnet_dmnet': f'init.dmnet of exp/spatial_correction_{dataset}/config.yaml (its DMNet is used)',
        'dmnet_only': f'init.dmnet of exp/spatial_correction_{dataset}/config.yaml; published as dmnet_{dataset}',
        'pretrained': f'init.pretrained of exp/dmnet_{dataset} and exp/spatial_correction_{dataset} '
                      f'(saved_model/pretrained/pretrained_{dataset}.pth)',
    }[kind]


def _shown(path):
    """A path as the user types it from here: relative to the working directory when inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def experiment_configs():
    """``[(config path, config)]`` of every experiment under ``exp/`` that loads, in stage order."""
    found = []
    for path in sorted(glob.glob(os.path.join(REPO_ROOT, 'exp', '*', '*.yaml'))):
        try:
            found.append((path, load_config(path)))
        except UserError:
            continue
    return sorted(found, key=lambda item: list(STAGE_KINDS).index(item[1]['stage']))


def training_uses(path, stage, experiment):
    """The command or config key that uses a file ``tools/train.py`` wrote for ``stage`` of ``experiment``."""
    configs = experiment_configs()
    if stage == 'correction':
        own = [config for config, cfg in configs if cfg['experiment'] == experiment]
        beside = os.path.join(os.path.dirname(path), 'config.yaml')  # the run's resolved config
        config = own[0] if own else beside if os.path.isfile(beside) else f'<the config of {experiment}>'
        return f'python tools/test_pda.py {_shown(config)} --checkpoint {path} (or tools/show.py, tools/infer_video.py)'
    key = STAGE_INIT[stage]
    # A later stage reads this experiment when its init.<key> lies in the experiment's folder (whatever SAVE_ROOT).
    readers = [(config, resolve_path(cfg['init'][key])) for config, cfg in configs if cfg['init'][key] and
               os.path.basename(os.path.dirname(cfg['init'][key])) == experiment]
    if not readers:
        return f'init.{key} of a later stage: python tools/train.py CONFIG --opts init.{key}={path}'
    names = ', '.join(_shown(config) for config, _ in readers)
    config, reads = readers[0]
    exact = os.path.exists(reads) and os.path.samefile(reads, path)
    return f'init.{key} of {names}: python tools/train.py {_shown(config)}' + (
        '' if exact else f' --opts init.{key}={path}')


def describe(path, model_cfg=None):
    """A dict describing the checkpoint at ``path`` (UserError if it cannot be read), compared with the networks of
    ``model_cfg`` (default: the config a training checkpoint carries, else the published networks)."""
    obj = read_checkpoint(path)
    info = {'path': path, 'bytes': os.path.getsize(path), 'sha256': sha256(path),
            'format': 'zip (torch >= 1.6)' if zipfile.is_zipfile(path) else 'legacy (torch <= 1.5, non-zip)'}
    raw, where = state_dict_of(obj)
    if raw is None:
        raise UserError(f'{path}: holds no state_dict (a mapping of parameter names to tensors)')
    info.update(state_dict=where, compared_with='the given config' if model_cfg else 'the published networks')
    training = None
    if isinstance(obj, dict) and 'stage' in obj:
        config = obj.get('config') if isinstance(obj.get('config'), dict) else {}
        info['training'] = training = {'stage': obj.get('stage'), 'iteration': obj.get('iteration'),
                                       'epoch': obj.get('epoch'), 'experiment': config.get('experiment')}
        if model_cfg is None and isinstance(config.get('model'), dict):
            model_cfg, info['compared_with'] = config['model'], 'its training config'
    info['tensors'] = len(raw)
    info['non_finite'] = non_finite(raw)  # a diverged run's weights: refused by every loader
    info['prefixes'] = {p: sum(k.startswith(p) for k in raw) for p in WRAPPER_PREFIXES if any(
        k.startswith(p) for k in raw)}
    state = strip_wrapper_prefixes(raw)

    if set(state) <= set(DMNet().state_dict()):
        report = compare(DMNet(), state)
        info.update(kind='dmnet_only', n_classes=None, dataset=None, networks={'dmnet': _counts(report)},
                    layout_match=report.fits(), uses=uses('dmnet_only', '<dataset>'))
        return info

    present = Counter(k.split('.', 1)[0] for k in state)
    classes = {int(state[k].shape[0]) for k in CLASSIFIERS if k in state}
    n_classes = classes.pop() if len(classes) == 1 else None
    info.update(n_classes=n_classes, dataset=DATASETS.get(n_classes))
    reference = _reference((model_cfg or {}).get('n_classes') or n_classes or 19, model_cfg)
    networks, match = {}, True
    for name in SUB_NETWORKS:
        if name not in present:
            continue
        report = compare(getattr(reference, name), submodule_weights(state, name))
        networks[name] = _counts(report)
        match = match and report.fits()
    others = sorted(set(present) - set(SUB_NETWORKS))
    if others:
        networks['other'] = {'top-level names': others, 'tensors': sum(present[o] for o in others)}
    info['networks'] = networks
    info['kind'] = kind = 'unknown' if others else KINDS.get(frozenset(present), 'unknown')
    # FlowNetS alone has no classifier.
    info['layout_match'] = bool(match and kind != 'unknown' and (n_classes is not None or kind == 'flownet'))
    if training and training['stage'] in STAGE_KINDS:
        info['layout_match'] = info['layout_match'] and kind == STAGE_KINDS[training['stage']]
        info['uses'] = training_uses(path, training['stage'], training['experiment'])
    else:
        info['uses'] = uses(kind, info['dataset'])
    return info


def _counts(report):
    return {'tensors': len(report.loaded) + len(report.mismatched) + len(report.unexpected),
            'match': len(report.loaded), 'missing': len(report.missing), 'unexpected': len(report.unexpected),
            'shape_mismatch': [k for k, _, _ in report.mismatched][:5]}


def format_text(info):
    """The description as a few readable lines."""
    lines = [f'file      {info["path"]} ({info["bytes"] / 1e6:.1f} MB)', f'sha256    {info["sha256"]}',
             f'format    {info["format"]}; loads with weights_only=True; state_dict at {info["state_dict"]}, '
             f'{info["tensors"]} tensors',
             'prefixes  ' + (', '.join(f'{p!r} on {n} keys (stripped when loading)' for p, n in
                                       info['prefixes'].items()) or 'none')]
    if 'training' in info:
        t = info['training']
        lines.append(f'training  checkpoint of this project: stage {t["stage"]}, iteration {t["iteration"]}, epoch '
                     f'{t["epoch"]}, experiment {t["experiment"]}')
    if info['kind'] in ('dmnet_only', 'flownet'):
        classes = '- (no classifier: the same file serves any dataset it was trained on)'
    else:
        classes = f'{info["n_classes"]}' + (f' ({info["dataset"]})' if info.get('dataset') else '')
    lines.append(f'kind      {info["kind"]}; classes {classes}')
    for name, counts in info['networks'].items():
        if name == 'other':
            lines.append(f'  other   {counts["tensors"]} tensors under {", ".join(counts["top-level names"])}')
            continue
        extra = ''.join(f', {counts[key]} {key}' for key in ('missing', 'unexpected') if counts[key])
        if counts['shape_mismatch']:
            extra += f', other shapes: {", ".join(counts["shape_mismatch"])}'
        lines.append(f'  {name:8s}{counts["match"]}/{counts["tensors"]} tensors fit{extra}')
    lines.append(f'layout    {"matches" if info["layout_match"] else "does NOT match"} the networks of '
                 f'{info["compared_with"]}')
    if info['non_finite']:
        lines.append(f'weights   {len(info["non_finite"])} tensor(s) hold NaN or infinity (first: '
                     f'{info["non_finite"][0]}): the run diverged; every loader refuses this file')
    lines.append(f'use       {info["uses"]}')
    return '\n'.join(lines)
