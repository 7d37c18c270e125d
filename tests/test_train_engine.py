"""The training engine on the tiny synthetic set (CPU): every stage, checkpoints feeding the next stage, frozen
vs trained parameters, exact resume, gradient accumulation, guard rails."""
import copy
import math
import os

import pytest
import torch
from helpers import flow_cfg, model_weights, train_cfg, train_killed_at_step, width_opts

from lib.model.dmnet import DMNet
from lib.model.scnet import build_scnet
from lib.train import engine
from lib.train.optim import build_optimizer, lr_factor
from lib.train.stages import FlowStageNet, SegmentationStageNet
from lib.utils.config import DEFAULTS, load_config
from lib.utils.errors import UserError


def data_cfg_for(root):
    cfg = copy.deepcopy(DEFAULTS['data'])
    cfg.update({'name': 'synthetic', 'root': root, 'train_list': os.path.join(root, 'list', 'train.txt'),
                'val_list': os.path.join(root, 'list', 'val.txt'), 'crop_size': None, 'num_workers': 0,
                'pin_memory': False})
    return cfg


def part(state, name):
    return {k: v for k, v in state.items() if k.startswith(f'{name}.')}


def assert_same(a, b):
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_all_params_changed(before, after, net, name):
    """Every trainable tensor of ``net.<name>`` differs (buffers and bias-free layers aside)."""
    for key, _ in getattr(net, name).named_parameters():
        full = f'{name}.{key}'
        assert not torch.equal(before[full], after[full]), f'{full} did not change'


@pytest.fixture(scope='module')
def chain(tmp_path_factory, synthetic_root):
    """segmentation -> flow -> dmnet -> correction, one iteration each on 32x64 crops, each stage initialised
    from the earlier stages' final.pth, then validated on one full-size val sample."""
    out = str(tmp_path_factory.mktemp('chain'))
    data = dict(data_cfg_for(synthetic_root), crop_size=[32, 64])
    # A random DMNet in the published DMNet-only format (bare keys). The correction stage gets this one rather
    # than the 1-iteration DMNet, whose BatchNorm statistics are still so far off that its eval-mode distortion
    # map is ~0 and CFNet would get no gradient.
    fresh_dmnet = os.path.join(out, 'dmnet_only.pth')
    torch.manual_seed(1)
    torch.save(DMNet().state_dict(), fresh_dmnet)
    opts = ['train.max_iters=1', 'train.val_every=1', 'train.val_max_clips=1']
    results = {
        'segmentation': engine.main(train_cfg('segmentation', out, data, *opts)),
        'flow': engine.main(train_cfg('flow', out, data, *opts)),
    }
    seg, flow = (os.path.join(out, name, 'final.pth') for name in ('segmentation', 'flow'))
    results['dmnet'] = engine.main(train_cfg('dmnet', out, data, *opts, f'init.deeplab={seg}',
                                            f'init.flownet={flow}', f'init.dmnet={fresh_dmnet}'))
    dmnet = os.path.join(out, 'dmnet', 'final.pth')
    results['correction'] = engine.main(train_cfg('correction', out, data, *opts, f'init.pretrained={dmnet}',
                                                 f'init.dmnet={fresh_dmnet}'))
    return out, results, fresh_dmnet


def test_every_stage_writes_checkpoints_log_and_validation(chain):
    out, results, _ = chain
    expected_metrics = {'segmentation': 'miou', 'flow': 'epe', 'dmnet': 'l1_d9', 'correction': 'miou_d5'}
    for stage, metric in expected_metrics.items():
        folder = os.path.join(out, stage)
        for name in ('now.pth', 'best.pth', 'final.pth', 'config.yaml', 'log.txt'):
            assert os.path.isfile(os.path.join(folder, name)), (stage, name)
        assert any(name.startswith('events.out.tfevents') for name in os.listdir(folder))
        assert results[stage]['iteration'] == 1
        value = results[stage]['metrics'][metric]
        assert math.isfinite(value) and value >= 0
        checkpoint = torch.load(os.path.join(folder, 'final.pth'), weights_only=True)
        assert checkpoint['stage'] == stage and checkpoint['iteration'] == 1
        assert {'python', 'numpy', 'torch', 'cuda'} <= set(checkpoint['rng'][0])


def test_dmnet_stage_trains_only_dmnet(chain):
    out, _, fresh_dmnet = chain
    state = model_weights(os.path.join(out, 'dmnet', 'final.pth'))
    assert_same(part(state, 'deeplab'), part(model_weights(os.path.join(out, 'segmentation', 'final.pth')),
                                              'deeplab'))  # incl. BatchNorm running statistics (eval mode)
    assert_same(part(state, 'flownet'), part(model_weights(os.path.join(out, 'flow', 'final.pth')), 'flownet'))
    before = {f'dmnet.{k}': v for k, v in torch.load(fresh_dmnet, weights_only=True).items()}
    assert_all_params_changed(before, state, build_scnet(load_config(None, width_opts())['model'], 'dmnet'), 'dmnet')


def test_correction_stage_freezes_deeplab_and_dmnet(chain):
    out, _, fresh_dmnet = chain
    init = model_weights(os.path.join(out, 'dmnet', 'final.pth'))
    state = model_weights(os.path.join(out, 'correction', 'final.pth'))
    assert_same(part(state, 'deeplab'), part(init, 'deeplab'))
    assert_same(part(state, 'dmnet'), {f'dmnet.{k}': v for k, v in torch.load(fresh_dmnet, weights_only=True).items()})
    cfg = load_config(None, width_opts())
    net = build_scnet(cfg['model'], 'correction')
    assert_all_params_changed(init, state, net, 'flownet')
    engine.seed_everything(0)  # the engine builds the network right after seeding with cfg.seed
    fresh = build_scnet(cfg['model'], 'correction').state_dict()
    assert_all_params_changed(fresh, state, net, 'cfnet')
    # The final checkpoint is a whole SCNet: it loads strictly.
    net.load_state_dict(state, strict=True)


def test_optimizer_holds_only_trainable_parameters():
    net = build_scnet(load_config(None, width_opts())['model'], 'correction')
    stage = engine.get_stage('correction')
    optimizer = build_optimizer(stage.param_groups(net, DEFAULTS['train']), DEFAULTS['train'])
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group['params']}
    expected = {id(p) for p in list(net.flownet.parameters()) + list(net.cfnet.parameters())}
    assert in_optimizer == expected
    assert [group['name'] for group in optimizer.param_groups] == ['flownet', 'cfnet']


def test_lr_drops_tenfold_after_half_of_the_iterations():
    assert [lr_factor(i, 10) for i in range(10)] == [1.0] * 6 + [0.1] * 4  # i > 5, as the paper's `itr > max/2`


def test_killed_and_resumed_run_ends_with_identical_weights(tmp_path, synthetic_data_cfg, monkeypatch):
    # 58 flow pairs / batch 16 = 3 iterations per epoch: the run crosses an epoch end, is killed in the middle of
    # epoch 2 and resumed there; random crops and flips make the RNG restore matter.
    data = dict(synthetic_data_cfg, crop_size=[32, 64], hflip=True)
    opts = ['train.checkpoint_every=1', 'deterministic=true']
    engine.main(flow_cfg(str(tmp_path), data, 'whole', *opts))

    train_killed_at_step(monkeypatch, engine, 5, flow_cfg(str(tmp_path), data, 'killed', *opts))
    interrupted = torch.load(tmp_path / 'killed' / 'now.pth', weights_only=True)
    assert interrupted['progress'] == {'iteration': 4, 'epoch': 1, 'batches_done': 1, 'epoch_complete': False,
                                       'best_score': None}
    assert not (tmp_path / 'killed' / 'final.pth').exists()
    engine.main(flow_cfg(str(tmp_path), data, 'killed', *opts), resume=True)

    whole = torch.load(tmp_path / 'whole' / 'final.pth', weights_only=True)
    resumed = torch.load(tmp_path / 'killed' / 'final.pth', weights_only=True)
    assert_same(whole['model'], resumed['model'])
    for a, b in zip(whole['optimizer']['state'].values(), resumed['optimizer']['state'].values()):
        assert torch.equal(a['exp_avg'], b['exp_avg']) and torch.equal(a['exp_avg_sq'], b['exp_avg_sq'])
    assert resumed['progress'] == {'iteration': 5, 'epoch': 1, 'batches_done': 2, 'epoch_complete': False,
                                   'best_score': None}


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, synthetic_data_cfg):
    # Same samples in the same order (and the same random crops, drawn sample by sample) in both runs.
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    one = engine.main(train_cfg('flow', str(tmp_path), data, 'experiment=big', 'train.batch_size=4'))
    two = engine.main(train_cfg('flow', str(tmp_path), data, 'experiment=acc', 'train.batch_size=2',
                               'train.accumulate=2'))
    a = model_weights(os.path.join(one['save_dir'], 'final.pth'))
    b = model_weights(os.path.join(two['save_dir'], 'final.pth'))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_missing_init_or_resume_checkpoint_is_an_error_before_any_work(tmp_path, synthetic_data_cfg):
    with pytest.raises(UserError, match=r'init\.deeplab, init\.flownet \(or init\.pretrained\)'):
        engine.main(train_cfg('dmnet', str(tmp_path), synthetic_data_cfg))
    with pytest.raises(UserError, match=r'init\.flownet: checkpoint .*absent\.pth not found'):
        engine.main(train_cfg('flow', str(tmp_path), synthetic_data_cfg, f'init.flownet={tmp_path}/absent.pth'))
    with pytest.raises(UserError, match=r'--resume: .*flow/now\.pth not found'):
        engine.main(train_cfg('flow', str(tmp_path), synthetic_data_cfg), resume=True)
    assert not (tmp_path / 'dmnet').exists() and not (tmp_path / 'flow').exists()


def test_mismatched_init_names_the_key_and_the_problem(tmp_path, synthetic_data_cfg):
    wider = tmp_path / 'wider.pth'
    torch.save({'model': SegmentationStageNet(19, deeplab={'width_mult': 0.25, 'middle_blocks': 1}).state_dict()},
               wider)
    flow_only = tmp_path / 'flow.pth'
    torch.save(FlowStageNet(flownet={'width_mult': 0.25}).state_dict(), flow_only)
    with pytest.raises(UserError,
                       match=r'init\.deeplab: .*wider\.pth does not fit deeplab .*\d+ with another shape \(\S+: file \['):
        engine.main(train_cfg('segmentation', str(tmp_path), synthetic_data_cfg, f'init.deeplab={wider}'))
    with pytest.raises(UserError, match=r'init\.pretrained: .*holds no weights for deeplab'):
        engine.main(train_cfg('dmnet', str(tmp_path), synthetic_data_cfg, f'init.pretrained={flow_only}'))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_data_cfg, monkeypatch):
    real_forward, calls = FlowStageNet.forward, []

    def nan_at_second_call(self, frames, flow):
        calls.append(1)
        losses = real_forward(self, frames, flow)
        return {'loss_epe': losses['loss_epe'] * float('nan')} if len(calls) == 2 else losses

    monkeypatch.setattr(FlowStageNet, 'forward', nan_at_second_call)
    cfg = train_cfg('flow', str(tmp_path), synthetic_data_cfg, 'train.checkpoint_every=1')
    with pytest.raises(engine.UserError, match=r'non-finite loss \(loss_epe=nan\) at iteration 1.*now\.pth'):
        engine.main(cfg)
    kept = torch.load(tmp_path / 'flow' / 'now.pth', weights_only=True)
    assert kept['iteration'] == 1
    assert all(torch.isfinite(v).all() for v in kept['model'].values())
    assert not (tmp_path / 'flow' / 'final.pth').exists()


def test_bad_config_values_are_one_line_errors(tmp_path, synthetic_data_cfg):
    with pytest.raises(UserError, match='unknown config key "train.learning_rate"'):
        load_config(None, ['train.learning_rate=1'])
    with pytest.raises(UserError, match=r'train\.amp: expected null \| bf16 \| fp16'):
        train_cfg('flow', str(tmp_path), synthetic_data_cfg, 'train.amp=fp8')
    with pytest.raises(UserError, match=r'stage: expected segmentation \| flow \| dmnet \| correction'):
        train_cfg('flw', str(tmp_path), synthetic_data_cfg)


def test_bn_momentum_option_reaches_the_trained_network_only(chain, tmp_path, synthetic_root):
    out, _, fresh_dmnet = chain
    data = dict(data_cfg_for(synthetic_root), crop_size=[32, 64])
    seg, flow = (os.path.join(out, name, 'final.pth') for name in ('segmentation', 'flow'))
    engine.main(train_cfg('dmnet', str(tmp_path), data, 'train.max_iters=1', 'train.val_every=100',
                         'train.bn_momentum=1.0', f'init.deeplab={seg}', f'init.flownet={flow}',
                         f'init.dmnet={fresh_dmnet}'))
    key = 'dmnet.conv1.0.depthwise_bn.running_var'  # starts at 1; momentum 1 replaces it by the batch variance
    default = model_weights(os.path.join(out, 'dmnet', 'final.pth'))  # the chain's run: the network's own 3e-4
    momentum_one = model_weights(os.path.join(str(tmp_path), 'dmnet', 'final.pth'))
    moved_default = (default[key] - 1).abs().max().item()
    moved_one = (momentum_one[key] - 1).abs().max().item()
    assert moved_one > 100 * moved_default > 0
    assert_same(part(momentum_one, 'deeplab'), part(default, 'deeplab'))  # frozen: untouched whatever the option


def test_stage_losses_are_taken_by_name_not_position():
    stage = engine.get_stage('correction')
    batch = (torch.zeros(1), torch.zeros(1))
    swapped = lambda frames, label: {'loss_cfnet': torch.tensor([2.0]), 'loss_semantic': torch.tensor([1.0])}  # noqa: E731
    losses = stage.losses(swapped, batch, 'cpu')
    assert list(losses) == ['loss_semantic', 'loss_cfnet'] and losses['loss_semantic'].item() == 1.0
    renamed = lambda frames, label: {'loss_ce': torch.tensor(1.0)}  # noqa: E731
    with pytest.raises(ValueError, match=r"correction stage: the network returned the losses \['loss_ce'\]"):
        stage.losses(renamed, batch, 'cpu')
