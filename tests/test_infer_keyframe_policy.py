"""Key-frame policies: parsing, the key-frame schedules they produce, and their accuracy/cost evaluation."""
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import TINY_VIDEO_MODEL, load_tool

from lib.eval import keyframe_policies as keyframe_eval
from lib.infer.keyframe_policy import DistortionTriggered, FixedInterval, PerFrame, distortion_score, parse_policy
from lib.infer.streaming import StreamingSegmenter
from lib.model import build_scnet
from lib.model.scnet import PropagationState
from lib.utils.config import load_config
from lib.utils.errors import UserError


class ScriptedNet:
    """Stands in for SCNet: frame t (every pixel of its image = t) gets a distortion map of value scores[t]."""
    align_corners = True

    def __init__(self, scores):
        self.scores = scores

    def key_frame(self, image):
        return PropagationState(torch.zeros(1, 2, 1, 1), image[..., :1, :1])

    def estimate_flow(self, current, previous):
        return torch.zeros(1, 2, 1, 1)

    def propagate(self, state, flow):
        return state

    def correct(self, state, current, correction=None, full_resolution=True):
        score = float(self.scores[int(current[0, 0, 0, 0])])
        return {'merged': torch.zeros(1, 2, 4, 4), 'distortion': torch.full((1, 1, 4, 4), score, dtype=torch.float64)}


def key_frame_schedule(policy, scores):
    """The frames :class:`StreamingSegmenter` sends through the key network under ``policy`` when non-key frame t
    gets a distortion map of mean ``scores[t]``."""
    segmenter = StreamingSegmenter(ScriptedNet(scores), policy)
    return [t for t in range(len(scores)) if segmenter.step(torch.full((1, 3, 4, 4), float(t)))[1]]


@pytest.mark.parametrize('interval, n, expected', [
    (1, 4, [0, 1, 2, 3]),
    (3, 10, [0, 3, 6, 9]),
    (5, 12, [0, 5, 10]),
    (20, 7, [0]),
])
def test_fixed_interval_keys_every_k_frames(interval, n, expected):
    # The distortion scores must not matter to a fixed schedule: give it alarming ones.
    assert key_frame_schedule(FixedInterval(interval), [1.0] * n) == expected


def test_per_frame_is_every_frame():
    assert key_frame_schedule(PerFrame(), [0.0] * 6) == list(range(6))


def test_distortion_triggers_the_next_frame_when_the_mean_exceeds_tau():
    # Frame 2 scores 0.5 > 0.3: frame 3 becomes the key frame; a score equal to tau (frame 5) does not trigger.
    scores = [0.0, 0.1, 0.5, 0.0, 0.0, 0.3, 0.0, 0.0]
    assert key_frame_schedule(DistortionTriggered(0.3, max_interval=100), scores) == [0, 3]


def test_distortion_forces_a_key_frame_at_the_max_interval():
    assert key_frame_schedule(DistortionTriggered(0.9, max_interval=4), [0.0] * 10) == [0, 4, 8]
    # max=1 degenerates to per-frame.
    assert key_frame_schedule(DistortionTriggered(0.9, max_interval=1), [0.0] * 3) == [0, 1, 2]


def test_distortion_trigger_and_max_interval_combine():
    scores = [0, 0, 0.8, 0, 0, 0, 0, 0, 0, 0.8, 0]
    # key 0; frame 2 triggers key 3; max=4 forces 7; frame 9 triggers 10.
    assert key_frame_schedule(DistortionTriggered(0.3, max_interval=4), scores) == [0, 3, 7, 10]


def test_distortion_policy_reads_the_map_mean_not_its_maximum():
    policy = DistortionTriggered(0.3, max_interval=10)
    policy.reset()
    assert policy.is_key()
    policy.update(True)
    # A map whose maximum (1.0) is above tau but whose mean (0.25) is below: no trigger.
    sparse = torch.zeros(1, 1, 4, 4)
    sparse[..., :2, :2] = 1.0
    assert not policy.is_key()
    policy.update(False, sparse)
    assert policy.last_score == pytest.approx(0.25)
    assert not policy.is_key()
    policy.update(False, torch.full((1, 1, 4, 4), 0.31))
    assert policy.is_key()


def test_percentile_statistic_matches_a_sorted_reference():
    values = torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10) / 100.0
    assert distortion_score(values, 'mean') == pytest.approx(0.495)
    # The 90th percentile with linear interpolation of 0.00..0.99: position 0.9 * 99 = 89.1.
    assert distortion_score(values, 'p90') == pytest.approx(0.891, abs=1e-6)
    policy = parse_policy('distortion:0.8,stat=p90')
    assert key_frame_schedule(policy, [0.0, 0.0, 0.0]) == [0]
    policy.reset()
    policy.update(policy.is_key())
    policy.update(False, values)  # p90 = 0.891 > 0.8 although the mean is 0.495
    assert policy.is_key()


def test_non_key_update_without_a_map_is_an_error():
    policy = DistortionTriggered(0.3)
    policy.update(policy.is_key())
    with pytest.raises(ValueError, match='distortion map'):
        policy.update(False, None)


@pytest.mark.parametrize('text, cls, attrs', [
    ('fixed:5', FixedInterval, {'interval': 5}),
    (' fixed:1 ', FixedInterval, {'interval': 1}),
    ('per-frame', PerFrame, {'interval': 1}),
    ('distortion:0.3', DistortionTriggered, {'threshold': 0.3, 'max_interval': 10, 'stat': 'mean'}),
    ('distortion:0.25,max=6', DistortionTriggered, {'threshold': 0.25, 'max_interval': 6}),
    ('distortion:0.5,max=3,stat=p95', DistortionTriggered, {'max_interval': 3, 'stat': 'p95'}),
])
def test_parse_policy(text, cls, attrs):
    policy = parse_policy(text)
    assert type(policy) is cls
    for name, value in attrs.items():
        assert getattr(policy, name) == value


@pytest.mark.parametrize('text, message', [
    ('fixed:0', 'positive integer'),
    ('fixed:-2', 'positive integer'),
    ('fixed:2.5', 'positive integer'),
    ('fixed', 'unknown key-frame policy'),
    ('distortion', 'unknown key-frame policy'),
    ('sometimes', 'unknown key-frame policy'),
    ('per-frame:2', 'unknown key-frame policy'),
    ('distortion:high', 'threshold'),
    ('distortion:nan', 'finite'),
    ('distortion:1.5', r'\[0, 1\]'),
    ('distortion:0.3,max=0', 'positive integer'),
    ('distortion:0.3,every=2', 'unknown option'),
    ('distortion:0.3,stat=median', 'percentile'),
    ('distortion:0.3,stat=p101', 'percentile'),
])
def test_parse_policy_errors_are_one_line_and_name_the_problem(text, message):
    with pytest.raises(UserError, match=message) as info:
        parse_policy(text)
    assert '\n' not in str(info.value)


# ------------------------------------------------------------------------------------ tools/eval_keyframe_policies

eval_tool = load_tool('eval_keyframe_policies')


def tiny_model():
    torch.manual_seed(0)
    return build_scnet(load_config(None, [f'model={TINY_VIDEO_MODEL}'.replace("'", '"')])['model']).eval()


def test_replayed_networks_give_the_same_labels_as_streaming():
    model = tiny_model()
    frames = torch.rand(6, 3, 24, 32)
    policies = ['fixed:3', 'distortion:0.0,max=10', 'per-frame']
    replay = keyframe_eval.ReplaySegmenter(model, parse_policy(policies[0]))
    replay.start_clip()
    for text in policies:  # later policies reuse what earlier ones cached
        replay.policy = parse_policy(text)
        replay.reset()
        fresh = StreamingSegmenter(model, parse_policy(text))
        for t in range(len(frames)):
            got, got_key, _ = replay.step(frames[t:t + 1])
            want, want_key, _ = fresh.step(frames[t:t + 1])
            assert got_key == want_key
            assert torch.equal(got, want), f'{text}, frame {t}'
    assert len(replay.cache['key']) == 6 and len(replay.cache['flow']) == 5


def test_propagation_only_streaming_is_key_logits_warped_step_by_step():
    """correct=False: the key frame's DeepLab logits carried frame to frame by FlowNetS and the warp alone, upsampled
    and argmaxed (written out here from the networks, not through the segmenter)."""
    model = tiny_model()
    frames = torch.rand(5, 3, 24, 32)
    segmenter = StreamingSegmenter(model, parse_policy('fixed:3'), correct=False)
    with torch.no_grad():
        for t in range(len(frames)):
            labels, is_key, distortion = segmenter.step(frames[t:t + 1])
            if t % 3 == 0:
                logits = model.deeplab(frames[t:t + 1])
            else:
                flow = model.flownet(torch.cat((frames[t:t + 1], frames[t - 1:t]), dim=1))
                logits = model.warpnet(logits, flow)
            want = F.interpolate(logits, size=(24, 32), mode='bilinear', align_corners=model.align_corners).argmax(1)
            assert is_key == (t % 3 == 0) and distortion is None
            assert torch.equal(labels, want), f'frame {t}'
    # A policy that needs the distortion map cannot drive the propagation-only row.
    segmenter = StreamingSegmenter(model, parse_policy('distortion:0.5'), correct=False)
    segmenter.step(frames[:1])
    with pytest.raises(ValueError, match='distortion map'):
        segmenter.step(frames[1:2])


def test_area_score_is_the_share_of_the_map_above_one_half():
    distortion = torch.tensor([0.2, 0.5, 0.51, 0.9, 1.0, 0.0, 0.7, 0.3]).reshape(1, 1, 2, 4)
    assert distortion_score(distortion, 'area') == pytest.approx(4 / 8)  # 0.51, 0.9, 1.0, 0.7; 0.5 is not above
    assert parse_policy('distortion:0.3,stat=area').name == 'distortion:0.3,max=10,stat=area'


def test_spearman_with_ties_matches_the_pearson_correlation_of_average_ranks():
    assert keyframe_eval.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # Ties share the mean of their ranks: x ranks (0.5, 0.5, 2, 3), y ranks (0, 1, 2, 3).
    rx, ry = [0.5, 0.5, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]
    mx, my = sum(rx) / 4, sum(ry) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    want = cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    assert keyframe_eval.spearman([5.0, 5.0, 7.0, 9.0], [10, 20, 30, 40]) == pytest.approx(want)
    assert keyframe_eval.spearman([1, 2], [2, 1]) is None and keyframe_eval.spearman([1, 1, 1], [1, 2, 3]) is None


def test_score_against_loss_pairs_scores_with_the_loss_to_the_key_network():
    per_frame, reference = (keyframe_eval.PolicyTally(PerFrame(), 2, 'cpu') for _ in range(2))
    # Clip 0, frames 1..3 at distances 1, 2, 3 (and a second clip at the same distances); loss = reference error
    # minus per-frame error of the same frame.
    for clip, offsets in ((0, [0.1, 0.2, 0.3]), (1, [0.3, 0.1, 0.2])):
        for t, loss in enumerate(offsets, start=1):
            per_frame.errors[clip, t] = 0.05
            reference.errors[clip, t] = 0.05 + loss
            reference.scored[clip, t] = (t, loss * 2)  # a score that orders the losses perfectly
    result = keyframe_eval.score_against_loss(per_frame, reference)
    assert result['frames'] == 6 and result['spearman_all'] == pytest.approx(1.0)
    assert result['spearman_within_distance'] == {}  # 2 frames per distance: too few for a correlation
    assert result['mean_spearman_within_distance'] is None


def test_equal_cost_comparison_interpolates_the_fixed_curve():
    fixed = [{'policy': 'per-frame', 'key_fraction': 1.0, 'miou': 0.7},
             {'policy': 'fixed:5', 'key_fraction': 0.2, 'miou': 0.5}]
    distortion = [{'policy': 'distortion:0.2', 'key_fraction': 0.6, 'gflops_per_frame': 1.0, 'miou': 0.65},
                  {'policy': 'distortion:0.9', 'key_fraction': 0.1, 'gflops_per_frame': 0.5, 'miou': 0.4}]
    rows, verdict = keyframe_eval.compare_at_equal_cost(fixed, distortion)
    assert rows[0]['fixed_miou_at_equal_cost'] == pytest.approx(0.6)
    assert rows[0]['delta_miou'] == pytest.approx(0.05)
    assert rows[1]['delta_miou'] is None  # fewer key frames than any fixed interval: no equal-cost reference
    assert verdict == {'compared': 1, 'better': 1, 'worse': 0, 'mean_delta_miou': pytest.approx(0.05),
                       'best_delta_miou': pytest.approx(0.05)}
    assert keyframe_eval.auto_thresholds([0.1, 0.2, 0.3, 0.4], quantiles=(0.0, 0.5, 1.0)) == [0.1, 0.25, 0.4]


def test_policy_evaluation_on_synthetic_video(synthetic_data_cfg, tmp_path):
    config = tmp_path / 'tiny.yaml'
    config.write_text(yaml.safe_dump({'experiment': 'tiny', 'device': 'cpu', 'model': TINY_VIDEO_MODEL,
                                      'data': synthetic_data_cfg}))
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(tiny_model().state_dict(), checkpoint)
    out = tmp_path / 'out'
    assert eval_tool.run([str(config), '--checkpoint', str(checkpoint), '--split', 'val', '--max-clips', '1',
                           '--max-frames', '12', '--intervals', '3', '--thresholds', '0.0', '1.0',
                           '--max-interval', '5', '--timing-repeats', '1', '--output', str(out), '--no-progress']) == 0
    report = json.loads((out / 'keyframe_policies.json').read_text())
    assert (out / 'keyframe_policies.png').stat().st_size > 0
    assert report['every_frame_labelled'] and report['frame_size'] == [64, 128]
    costs = report['step_costs']
    assert costs['key']['gflops'] > 0 and costs['nonkey']['gflops'] > 0
    by_name = {r['policy']: r for r in report['fixed'] + report['distortion']}
    assert set(by_name) == {'per-frame', 'fixed:3', 'distortion:0,max=5', 'distortion:1,max=5'}
    assert by_name['per-frame']['key_frames'] == 12 and by_name['fixed:3']['key_frames'] == 4
    assert by_name['distortion:0,max=5']['key_frames'] == 6  # every non-key frame triggers the next
    assert by_name['distortion:1,max=5']['key_frames'] == 3  # never triggers: 0, 5, 10
    fixed3 = by_name['fixed:3']
    assert fixed3['gflops_per_frame'] == pytest.approx((costs['key']['gflops'] + 2 * costs['nonkey']['gflops']) / 3)
    assert by_name['per-frame']['gflops_per_frame'] == pytest.approx(costs['key']['gflops'])
    assert len(report['equal_cost_comparison']) == 2
    # Propagation only: the fixed policies again, with the flow-and-warp step's cost for their non-key frames.
    propagation = {r['policy']: r for r in report['propagation']}
    assert set(propagation) == {'per-frame', 'fixed:3'} and propagation['fixed:3']['key_frames'] == 4
    assert propagation['fixed:3']['gflops_per_frame'] == pytest.approx(
        (costs['key']['gflops'] + 2 * costs['propagation']['gflops']) / 3)
    assert report['non_key_over_key_flops'] == pytest.approx(costs['nonkey']['gflops'] / costs['key']['gflops'])
    tracking = report['score_vs_loss']  # the never-triggering max=5 reference: keys 0, 5, 10; 9 non-key frames
    assert tracking['frames'] == 9 and set(tracking['spearman_within_distance']) <= {'1', '2', '3', '4'}
