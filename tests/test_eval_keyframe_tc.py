"""Temporal consistency in the key-frame policy evaluation (lib.eval.keyframe_policies): every row's TC against TC
computed directly from freshly streamed labels, the ground truth's own TC as the ceiling, DIS flow on clips without
ground-truth motion, and the choice of the deployed inference path."""
import os
import time

import pytest
import torch
import yaml
from helpers import tiny_model_cfg, varied_tiny_scnet

from lib.dataset import read_frame
from lib.dataset import synthetic_layout as layout
from lib.dataset.build import list_path_of
from lib.dataset.frame_list import read_list
from lib.eval import keyframe_policies as kp
from lib.eval.temporal_consistency import ConsistencyByFlow, TemporalConsistency, dis_flow, read_clip_motion
from lib.infer.keyframe_policy import FixedInterval, PerFrame, parse_policy
from lib.infer.streaming import StreamingSegmenter
from lib.utils.errors import UserError

FRAMES = 10  # frames 0..9 of the first val snippet: 9 pairs


def first_clip(data_cfg):
    """Frames (T, 3, H, W), labels (T, H, W), flow and valid of the first val snippet's first FRAMES frames."""
    entry = read_list(list_path_of(data_cfg, 'val'), 'synthetic')[0]
    meta = layout.read_meta(data_cfg['root'])
    relatives = [entry.frame(k - int(meta['labelled_frame'])) for k in range(FRAMES)]
    frames = torch.stack([read_frame(os.path.join(data_cfg['root'], rel)) for rel in relatives])
    return (frames,) + read_clip_motion(data_cfg['root'], relatives, 19)


def direct_tc(labels, flow, valid=None):
    """TC of a clip's labels computed here, in the report's fields."""
    result = TemporalConsistency(19).update(labels[:-1], labels[1:], flow, valid).result()
    return {key: result[key] for key in ('tc', 'agreement', 'pairs', 'counted')}


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tc')
    net = varied_tiny_scnet(seed=0)
    checkpoint = folder / 'tiny.pth'
    torch.save(net.state_dict(), checkpoint)
    return folder, net, checkpoint


def evaluate(folder, checkpoint, data_cfg, name, **options):
    config = folder / f'{name}.yaml'
    config.write_text(yaml.safe_dump({'experiment': 'tiny', 'device': 'cpu', 'model': tiny_model_cfg(),
                                      'data': data_cfg}))
    run = kp.KeyframeRun(str(config), str(checkpoint), split='val', max_clips=1, max_frames=FRAMES, intervals=[3],
                         thresholds=[0.5], max_interval=5, timing_repeats=1, out=str(folder / name), progress=False,
                         **options)
    return kp.run_keyframe_policies(run)[0]


def test_every_row_has_its_tc_and_the_ground_truth_is_the_ceiling(tiny_run, synthetic_data_cfg):
    folder, net, checkpoint = tiny_run
    report = evaluate(folder, checkpoint, synthetic_data_cfg, 'synthetic', paths=['fast'])
    frames, labels, flow, valid = first_clip(synthetic_data_cfg)
    assert list(report['tc_flows']) == ['ground_truth', 'dis']

    # The ground truth with its own flow: what test_temporal_consistency established (just under 1: only the
    # same-surface class boundaries between pixel centres differ), from the same pairs, flows and masks.
    truth = report['ground_truth_tc']
    assert list(truth) == ['ground_truth', 'dis']
    assert truth['ground_truth'] == pytest.approx(direct_tc(labels, flow, valid), rel=1e-12)
    dis = torch.stack([dis_flow(frames[t - 1], frames[t]) for t in range(1, FRAMES)])
    assert truth['dis'] == pytest.approx(direct_tc(labels, dis), rel=1e-12)  # every carried pixel counted
    assert 0.99 < truth['ground_truth']['tc'] < 1.0 and truth['ground_truth']['pairs'] == FRAMES - 1

    rows = report['fixed'] + report['propagation'] + report['distortion']
    assert len(rows) == 2 * 2 + 1
    for r in rows:
        assert list(r['tc']) == ['ground_truth', 'dis'], r['policy']
        assert r['tc']['ground_truth']['pairs'] == FRAMES - 1 and 0 < r['tc']['ground_truth']['tc'] <= 1
    # Each row's TC is that of the labels the model streams under its policy (no replay, no padding, no tallies).
    for r in (report['fixed'][0], report['fixed'][1], report['propagation'][1]):
        segmenter = StreamingSegmenter(net, parse_policy(r['policy']), correct=r['row'] == 'davss')
        streamed = torch.cat([segmenter.step(frames[t:t + 1])[0] for t in range(FRAMES)])
        assert r['tc']['ground_truth'] == pytest.approx(direct_tc(streamed, flow, valid), rel=1e-12), r['policy']
        assert r['tc']['dis'] == pytest.approx(direct_tc(streamed, dis), rel=1e-12), r['policy']
    assert report['fixed'][1]['tc'] != report['propagation'][1]['tc']  # the correction changes the labels
    assert 'ground truth (TC ceiling)' in kp.format_table(report)

    # The deployed inference path, measured against the exact one on the same clips.
    paths = report['paths']
    assert list(paths['paths']) == ['exact', 'fast'] and paths['interval'] == 3
    assert paths['paths']['exact']['agreement'] == 1.0
    assert paths['deployed'] in ('exact', 'fast')
    assert paths['paths'][paths['deployed']]['agreement'] >= kp.AGREEMENT_BAR
    for p in paths['paths'].values():
        assert p['ms_per_frame'] == pytest.approx((p['key_ms'] + 2 * p['nonkey_ms']) / 3)


def test_an_unknown_path_is_refused_before_anything_runs(tiny_run, synthetic_data_cfg):
    folder, _, checkpoint = tiny_run
    with pytest.raises(UserError, match=r"paths \['tensorrt'\]: expected some of \['compile', 'fast', 'onnxruntime'\]"):
        evaluate(folder, checkpoint, synthetic_data_cfg, 'unknown', paths=['fast', 'tensorrt'])
    assert not (folder / 'unknown').exists()


def test_tc_runs_on_clips_without_ground_truth_motion(tiny_run, synthetic_data_cfg):
    """Read as Cityscapes (the synthetic set has its layout), the clips are the 10-frame PDA clips, labelled at the
    last frame only: TC under DIS flow, and no ground-truth ceiling."""
    _, net, _ = tiny_run
    cfg = {'data': dict(synthetic_data_cfg, name='cityscapes')}
    tallies = [kp.PolicyTally(PerFrame(), 19, 'cpu'), kp.PolicyTally(FixedInterval(3), 19, 'cpu', 'propagation')]
    truth = ConsistencyByFlow(19)
    kp.evaluate_policies(net, kp.load_clips(cfg, 'val', 19, max_clips=1), tallies, 'cpu', False, 'pda', truth)
    assert not truth
    frames, _, _ = next(kp.load_clips(cfg, 'val', 19, max_clips=1))
    dis = torch.stack([dis_flow(frames[t - 1], frames[t]) for t in range(1, len(frames))])
    for tally in tallies:
        segmenter = StreamingSegmenter(net, tally.policy, correct=False)
        streamed = torch.cat([segmenter.step(frames[t:t + 1])[0] for t in range(len(frames))])
        assert tally.n_frames == len(frames) == 10
        assert tally.tc.summary() == {'dis': pytest.approx(direct_tc(streamed, dis), rel=1e-12)}


class FakePath:
    """A runner whose labels are the exact ones with ``wrong`` pixels of every frame changed, each step ``delay`` s."""

    def __init__(self, wrong=0, delay=0.0, fails=False):
        self.wrong, self.delay, self.fails = wrong, delay, fails

    def labels(self, frame):
        if self.fails:
            raise RuntimeError('inductor: no C++ compiler\nsecond line')
        time.sleep(self.delay)
        labels = (frame[:, 0] * 4).long()
        labels.view(-1)[:self.wrong] += 1
        return None, labels

    def key_step(self, frame):
        return self.labels(frame)

    def non_key_step(self, state, frame, previous):
        return self.labels(frame)


def not_installed():
    raise UserError('onnxruntime is not installed')


@pytest.mark.parametrize('bar, deployed', [(kp.AGREEMENT_BAR, 'close'), (0.0, 'wrong'), (1.0, 'exact')])
def test_choose_path_takes_the_fastest_path_that_meets_the_bar(bar, deployed):
    frames = torch.rand(6, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    builders = {'exact': lambda: FakePath(delay=0.02), 'close': lambda: FakePath(wrong=1, delay=0.005),
                'wrong': lambda: FakePath(wrong=600), 'broken': not_installed, 'crashing': lambda: FakePath(fails=True)}
    result = kp.choose_path(builders, [(frames, (20, 30))], frames[:2], interval=3, repeats=3, bar=bar)
    assert result['deployed'] == deployed and result['bar'] == bar
    paths = result['paths']
    assert list(paths) == list(builders)
    assert paths['exact']['agreement'] == 1.0 and paths['wrong']['agreement'] == 0.0
    assert paths['close']['agreement'] == pytest.approx(1 - 1 / 600)  # just above the 99.5% bar
    assert paths['broken'] == {'error': 'onnxruntime is not installed'}
    assert paths['crashing'] == {'error': 'inductor: no C++ compiler'}
    assert paths['wrong']['ms_per_frame'] < paths['close']['ms_per_frame'] < paths['exact']['ms_per_frame']
