"""The training recipe of the paper's code: its Adam parameter lists (every tensor once per enclosing module, each
appearance a full Adam step, as torch 1.5 ran it) and its triplet list (intermediate frames drawn once, right
after ``random.seed(666)``).  ``train.param_lists: original`` and ``data.intermediate: original`` reproduce them;
the references here are re-stated from the original scripts, not taken from the code under test."""
import collections
import copy
import math
import os
import random

import pytest
import torch
import torch.nn as nn
from helpers import width_opts

from lib.dataset import build_dataset, read_frame
from lib.model import CFNet, DMNet, FlowNetS
from lib.model.scnet import build_scnet
from lib.train import engine
from lib.train.optim import LoopAdam, build_optimizer, original_param_list
from lib.utils.config import DEFAULTS, REPO_ROOT, load_config
from lib.utils.errors import UserError

# --- parameter lists -----------------------------------------------------------------------------------------

# How many times the original's lists hold each tensor, counted on the published networks: {appearances: tensors}.
ORIGINAL_MULTIPLICITIES = {
    'flownet': (FlowNetS, {3: 24, 2: 14}),
    'cfnet': (lambda: CFNet(19), {3: 34, 2: 2}),
    'dmnet': (DMNet, {4: 24, 3: 6, 2: 2}),
}


@pytest.mark.parametrize('name', sorted(ORIGINAL_MULTIPLICITIES))
def test_original_lists_are_the_double_loop_of_the_paper(name):
    build, expected = ORIGINAL_MULTIPLICITIES[name]
    module = build()
    built = original_param_list(module)
    # The paper's training scripts, literally: for m in net.module.X.modules(): for p in m.parameters().
    loop = [p for m in module.modules() for p in m.parameters()]
    assert len(built) == len(loop) and all(a is b for a, b in zip(built, loop))
    appearances = collections.Counter(id(p) for p in built)
    assert dict(collections.Counter(appearances.values())) == expected
    # A tensor is listed once per module on its path: its own module and every ancestor up to X.
    for key, p in module.named_parameters():
        assert appearances[id(p)] == len(key.split('.')), key


def test_stage_groups_follow_param_lists():
    net = build_scnet(load_config(None, width_opts())['model'], 'correction')
    stage = engine.get_stage('correction')
    train_cfg = dict(DEFAULTS['train'], param_lists='original')
    optimizer = build_optimizer(stage.param_groups(net, train_cfg), train_cfg)
    assert isinstance(optimizer, LoopAdam)
    flow, cfnet = optimizer.param_groups
    assert flow['name'] == 'flownet' and len(flow['params']) == 100 and len({id(p) for p in flow['params']}) == 38
    assert cfnet['name'] == 'cfnet' and len(cfnet['params']) == 106 and len({id(p) for p in cfnet['params']}) == 36
    unique = build_optimizer(stage.param_groups(net, DEFAULTS['train']), DEFAULTS['train'])
    assert type(unique) is torch.optim.Adam and [len(g['params']) for g in unique.param_groups] == [38, 36]


def test_bad_param_lists_and_fp16_with_original_are_config_errors():
    net = build_scnet(load_config(None, width_opts())['model'], 'dmnet')
    stage = engine.get_stage('dmnet')
    with pytest.raises(UserError, match='train.param_lists: expected one of unique | original, got "twice"'):
        stage.param_groups(net, dict(DEFAULTS['train'], param_lists='twice'))
    train_cfg = dict(DEFAULTS['train'], param_lists='original', amp='fp16')
    with pytest.raises(UserError, match='fp16 cannot be combined with train.param_lists: original'):
        build_optimizer(stage.param_groups(net, train_cfg), train_cfg)


# --- Adam, one tensor at a time ------------------------------------------------------------------------------

def reference_adam(p, grads, lrs, k, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """float64 Adam of one tensor listed ``k`` times: per step, k successive updates with the same gradient."""
    beta1, beta2 = betas
    p = p.double().clone()
    m, v, t = torch.zeros_like(p), torch.zeros_like(p), 0
    for grad, lr in zip(grads, lrs):
        for _ in range(k):
            t += 1
            g = grad.double() + weight_decay * p
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
            p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p


class Tree(nn.Module):
    """Tensors listed 1 to 4 times by the original loop (own parameter, and 1 to 3 levels of submodules)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)
        self.body = nn.Sequential(nn.Linear(2, 4), nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU()))
        self.scale = nn.Parameter(torch.ones(3))


@pytest.mark.parametrize('weight_decay', [0.0, 0.01])
def test_loop_adam_gives_each_appearance_a_full_step(weight_decay):
    torch.manual_seed(0)
    tree = Tree()
    params = original_param_list(tree)
    multiplicity = collections.Counter(id(p) for p in params)
    assert sorted(set(multiplicity.values())) == [1, 2, 3, 4]
    start = {name: p.detach().clone() for name, p in tree.named_parameters()}
    steps = 4
    grads = {name: [torch.randn_like(p) for _ in range(steps)] for name, p in tree.named_parameters()}
    lrs = [1e-2, 1e-2, 1e-3, 1e-3]  # the schedule changes the rate between steps, as apply_lr does
    optimizer = LoopAdam([{'params': params, 'lr': lrs[0]}], betas=(0.9, 0.999), weight_decay=weight_decay)
    for step in range(steps):
        optimizer.param_groups[0]['lr'] = lrs[step]
        for name, p in tree.named_parameters():
            p.grad = grads[name][step].clone()
        optimizer.step()
    for name, p in tree.named_parameters():
        k = multiplicity[id(p)]
        expected = reference_adam(start[name], grads[name], lrs, k, weight_decay=weight_decay)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-6, msg=name)
        assert optimizer.state[p]['step'] == steps * k
        if k > 1:  # not vacuous: one update per step (torch.optim.Adam over unique lists) ends elsewhere
            once = reference_adam(start[name], grads[name], lrs, 1, weight_decay=weight_decay)
            assert (p.detach().double() - once).abs().max() > 1e-4, name


def test_loop_adam_state_round_trip_continues_exactly():
    torch.manual_seed(1)
    trees = [Tree(), Tree()]
    trees[1].load_state_dict(trees[0].state_dict())
    grads = [{name: torch.randn_like(p) for name, p in trees[0].named_parameters()} for _ in range(3)]

    def step(tree, optimizer, g):
        for name, p in tree.named_parameters():
            p.grad = g[name].clone()
        optimizer.step()

    whole = LoopAdam(original_param_list(trees[0]), lr=1e-2)
    for g in grads:
        step(trees[0], whole, g)
    first = LoopAdam(original_param_list(trees[1]), lr=1e-2)
    step(trees[1], first, grads[0])
    resumed = LoopAdam(original_param_list(trees[1]), lr=1e-2)
    resumed.load_state_dict(first.state_dict())
    for g in grads[1:]:
        step(trees[1], resumed, g)
    for a, b in zip(trees[0].parameters(), trees[1].parameters()):
        assert torch.equal(a, b)


# --- the engine ----------------------------------------------------------------------------------------------

def flow_cfg(out, root, *opts):
    cfg = load_config(None, ['stage=flow', 'experiment=flow', f'train.save_root={out}', f'train.tblog_root={out}',
                             'train.batch_size=4', 'train.max_iters=2', 'train.val_every=0', 'train.log_every=1',
                             'seed=0', 'deterministic=true', *width_opts(), *opts])
    cfg['data'].update({'name': 'synthetic', 'root': root, 'train_list': os.path.join(root, 'list', 'train.txt'),
                        'val_list': os.path.join(root, 'list', 'val.txt'), 'crop_size': [32, 64],
                        'num_workers': 0, 'pin_memory': False})
    return cfg


def test_engine_trains_with_the_original_lists_and_resumes(tmp_path, synthetic_root):
    whole = engine.main(flow_cfg(str(tmp_path / 'whole'), synthetic_root, 'train.param_lists=original'))
    checkpoint = torch.load(os.path.join(whole['save_dir'], 'final.pth'), weights_only=True)
    names = [k[len('flownet.'):] for k in checkpoint['model'] if k.startswith('flownet.')]
    state = checkpoint['optimizer']['state']
    # Two iterations, each tensor stepped once per appearance: step = 2 x (depth of its name).
    assert sorted(s['step'] for s in state.values()) == sorted(2 * len(n.split('.')) for n in names)
    log = open(os.path.join(whole['save_dir'], 'log.txt')).read()
    assert 'LoopAdam, train.param_lists original (flownet 100 entries of 38 tensors)' in log

    split = str(tmp_path / 'split')
    engine.main(flow_cfg(split, synthetic_root, 'train.param_lists=original', 'train.max_iters=1'))
    resumed = engine.main(flow_cfg(split, synthetic_root, 'train.param_lists=original'), resume=True)
    assert resumed['iteration'] == 2
    weights = torch.load(os.path.join(resumed['save_dir'], 'final.pth'), weights_only=True)['model']
    for key, value in checkpoint['model'].items():
        assert torch.equal(value, weights[key]), key
    # A run of the other variant does not silently continue from these lists.
    with pytest.raises(engine.UserError, match=r"this config differs from the run's \(train\.param_lists 'original' -> 'unique'\)"):
        engine.main(flow_cfg(split, synthetic_root, 'train.max_iters=3'), resume=True)


# --- the triplet list ----------------------------------------------------------------------------------------

def cityscapes_train_cfg(**changes):
    cfg = copy.deepcopy(DEFAULTS['data'])
    cfg.update(root='/nonexistent/cityscapes', train_list=os.path.join(REPO_ROOT, 'data/list/cityscapes/train.txt'),
               **changes)
    return cfg


def test_original_triplet_list_is_the_papers():
    state = random.getstate()
    dataset = build_dataset(cityscapes_train_cfg(intermediate='original'), 'train', 'triplet', seed=666)
    assert random.getstate() == state  # drawn from its own generator, the global one is untouched
    with open(os.path.join(REPO_ROOT, 'data/list/cityscapes/train.txt')) as f:
        lines = f.readlines()
    # lib/dataset/cityscapes.py of the original, right after random.seed(666) in train():
    random.seed(666)
    expected = []
    for line in lines:
        for j in range(2, 11):
            expected.append(random.randint(1, j - 1))  # img_2_id = img_3_id - randint(1, j - 1)
    random.setstate(state)
    assert len(dataset) == len(lines) * 9 == 2975 * 9
    assert dataset.intermediates[:90] == expected[:90]
    assert dataset.intermediates == expected
    assert all(1 <= i < gap for i, gap in zip(dataset.intermediates, dataset.gaps * len(lines)))


def test_original_intermediate_is_fixed_and_loaded(synthetic_data_cfg):
    dataset = build_dataset(dict(synthetic_data_cfg, intermediate='original'), 'train', 'triplet', seed=666)
    for idx in (0, 8, 9, 17):  # gaps 2 and 10 of both lines
        entry, gap = dataset.frames[idx // 9], dataset.gaps[idx % 9]
        offset = dataset.intermediates[idx]
        first, second = dataset[idx][0], dataset[idx][0]
        assert torch.equal(first, second)  # the same triplet every time it is drawn
        assert torch.equal(first[1], read_frame(os.path.join(dataset.root, entry.frame(-offset))))
        assert torch.equal(first[0], read_frame(os.path.join(dataset.root, entry.frame(-gap))))
    # 'resample' (the synthetic configs' default) still draws anew.
    resampled = build_dataset(synthetic_data_cfg, 'train', 'triplet')
    torch.manual_seed(0)
    seen = {tuple(resampled[8][0][1].flatten()[:64].tolist()) for _ in range(12)}
    assert resampled.intermediates is None and len(seen) > 1


def test_bad_intermediate_mode_and_missing_seed_are_errors(synthetic_data_cfg):
    from lib.utils.errors import UserError
    with pytest.raises(UserError, match='data.intermediate: expected one of resample | original, got "fixed"'):
        build_dataset(dict(synthetic_data_cfg, intermediate='fixed'), 'train', 'triplet')
    with pytest.raises(UserError, match='needs the run\'s seed'):
        build_dataset(dict(synthetic_data_cfg, intermediate='original'), 'train', 'triplet')


def test_paper_configs_use_the_original_recipe_and_synthetic_the_clean_one():
    for name in ('dmnet_cityscapes', 'spatial_correction_cityscapes', 'dmnet_camvid', 'spatial_correction_camvid'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', name, 'config.yaml'))
        assert cfg['train']['param_lists'] == 'original' and cfg['data']['intermediate'] == 'original', name
        assert cfg['train']['tf32'] is False and cfg['seed'] == 666 and cfg['model']['align_corners'] is True, name
    for stage in ('segmentation', 'flow', 'dmnet', 'correction'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', 'synthetic', f'{stage}.yaml'))
        assert cfg['train']['param_lists'] == 'unique' and cfg['data']['intermediate'] == 'resample', stage
        assert cfg['model']['align_corners'] is True and cfg['eval']['align_corners'] in (None, True), stage


def test_math_of_the_reference_is_adam():
    """The float64 re-statement with k = 1 is textbook Adam: one step from zero moments moves by lr * sign(g)."""
    p, g = torch.tensor([1.0, -2.0]), torch.tensor([0.3, -5.0])
    moved = reference_adam(p, [g], [0.1], 1)
    assert torch.allclose(moved, p.double() - 0.1 * torch.sign(g).double() * (1 - 1e-8 / (g.abs().double() + 1e-8)),
                          atol=1e-9)
    assert math.isclose(float(reference_adam(p, [g], [0.1], 2)[0]), 1.0 - 0.2, rel_tol=1e-6)


def test_tf32_context_sets_and_restores_the_flags():
    from lib.utils.runtime import tf32
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    for enabled in (False, True):
        with tf32(enabled):
            assert torch.backends.cuda.matmul.allow_tf32 is enabled and torch.backends.cudnn.allow_tf32 is enabled
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
