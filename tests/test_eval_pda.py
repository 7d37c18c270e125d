"""PDA evaluation: the fast path against a plain per-distance loop, the reference rows, the command line, bad input.

The reference loop below is written from the paper's test script (for each distance: key frame through DeepLab,
step-by-step flow + warp of logits and 1/4 image, DMNet and CFNet at t, x4 upsampling, merge, argmax), using only
the sub-networks, so that it shares no code with ``lib.eval.pda``.
"""
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import load_tool, tiny_model_cfg, varied_tiny_scnet, write_experiment

from lib.dataset import build_dataset, build_eval_loader
from lib.eval.pda import evaluate_pda
from lib.model import build_scnet

N_CLASSES = 19
def _resize(x, scale, align_corners):
    return F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=align_corners)


def _confusion(pred, gt, n):
    keep = gt != 255
    return torch.bincount(gt[keep] * n + pred[keep], minlength=n * n).view(n, n)


@torch.no_grad()
def reference_pda(net, loader, distances, align_corners, n=N_CLASSES):
    """The paper's protocol, one distance at a time; returns confusion matrices per row (and per distance)."""
    rows = {'davss': {}, 'propagation_only': {}, 'per_frame': torch.zeros(n, n, dtype=torch.int64)}
    for d in distances:
        rows['davss'][d] = torch.zeros(n, n, dtype=torch.int64)
        rows['propagation_only'][d] = torch.zeros(n, n, dtype=torch.int64)
        for frames, gt in loader:
            key = frames[:, 9 - d]
            logits = net.deeplab(key)
            key_quarter = _resize(key, 0.25, align_corners)
            for i in range(d):
                previous, current = frames[:, 9 - d + i], frames[:, 10 - d + i]
                flow = net.flownet(torch.cat([current, previous], dim=1))
                logits = net.warpnet(logits, flow)
                key_quarter = net.warpnet(key_quarter, flow)
            propagated = _resize(logits, 4, align_corners)
            distortion = _resize(net.dmnet(key_quarter, _resize(current, 0.25, align_corners)), 4, align_corners)
            correction = _resize(net.cfnet(current), 4, align_corners)
            merged = propagated * (1 - distortion) + correction * distortion
            rows['davss'][d] += _confusion(merged.argmax(1), gt, n)
            rows['propagation_only'][d] += _confusion(propagated.argmax(1), gt, n)
    for frames, gt in loader:
        rows['per_frame'] += _confusion(_resize(net.deeplab(frames[:, 9]), 4, align_corners).argmax(1), gt, n)
    return rows


@pytest.fixture(scope='module')
def net():
    return varied_tiny_scnet()


@pytest.fixture
def clips(synthetic_data_cfg):
    """The 2 train snippets of the tiny synthetic set as PDA clips (unaugmented in 'pda' mode)."""
    return build_dataset(synthetic_data_cfg, 'train', 'pda')


def _assert_same_matrices(result, reference, distances):
    for i, d in enumerate(distances):
        assert torch.equal(torch.tensor(result['confusion']['davss'][i]), reference['davss'][d]), f'davss d={d}'
        assert torch.equal(torch.tensor(result['confusion']['propagation_only'][i]),
                           reference['propagation_only'][d]), f'propagation only d={d}'
    assert torch.equal(torch.tensor(result['confusion']['per_frame'][0]), reference['per_frame'])


def test_fast_path_matches_per_distance_loop(net, clips):
    loader = build_eval_loader(clips, batch_size=1)
    distances = list(range(1, 10))
    result = evaluate_pda(net, loader, N_CLASSES, distances=distances, progress=False)
    reference = reference_pda(net, loader, distances, align_corners=True)
    _assert_same_matrices(result, reference, distances)
    # Not a vacuous comparison: several classes are predicted and the distances disagree with each other.
    assert len({tuple(map(tuple, m)) for m in result['confusion']['davss']}) > 1
    assert (torch.tensor(result['confusion']['davss'][8]).sum(0) > 0).sum() >= 3
    assert result['n_clips'] == 2 and result['distances'] == distances
    assert len(result['davss']['miou']) == 9 and len(result['davss']['iou'][0]) == N_CLASSES
    assert result['davss']['mean_miou'] == pytest.approx(sum(result['davss']['miou']) / 9)
    assert isinstance(result['per_frame']['miou'], float) and len(result['propagation_only']['miou']) == 9


def test_batched_clips_subset_of_distances_and_resize_convention(clips):
    """Batch of 2 clips, distances 1/4/9 only, ``align_corners=False`` (the original Cityscapes test script)."""
    net = varied_tiny_scnet(align_corners=False)
    loader = build_eval_loader(clips, batch_size=2)
    distances = [1, 4, 9]
    result = evaluate_pda(net, loader, N_CLASSES, distances=[9, 4, 1], progress=False)
    assert result['distances'] == distances
    _assert_same_matrices(result, reference_pda(net, loader, distances, align_corners=False), distances)


def test_rows_can_be_switched_off_and_max_clips(net, clips):
    loader = build_eval_loader(clips, batch_size=1, max_items=1)
    result = evaluate_pda(net, loader, N_CLASSES, distances=[2, 9], per_frame=False, propagation_only=False,
                          progress=False)
    assert result['per_frame'] is None and result['propagation_only'] is None
    assert set(result['confusion']) == {'davss'} and result['n_clips'] == 1
    labelled = int((clips[0][1] != 255).sum())
    assert all(sum(map(sum, m)) == labelled for m in result['confusion']['davss'])


def test_batched_option_agrees(net, clips):
    """``batched=True`` (one call per sub-network over all distances) may differ only by float rounding."""
    loader = build_eval_loader(clips, batch_size=1)
    exact = evaluate_pda(net, loader, N_CLASSES, distances=[1, 5, 9], progress=False)
    batched = evaluate_pda(net, loader, N_CLASSES, distances=[1, 5, 9], progress=False, batched=True)
    for row in ('davss', 'propagation_only', 'per_frame'):
        for a, b in zip(exact['confusion'][row], batched['confusion'][row]):
            a, b = torch.tensor(a), torch.tensor(b)
            assert a.sum() == b.sum()
            assert (a - b).abs().sum() <= 0.002 * a.sum()


def test_ranks_share_the_first_max_clips_without_overlap(monkeypatch):
    from lib.utils import distributed
    shards = []
    for rank in range(3):
        monkeypatch.setattr(distributed, 'get_rank', lambda rank=rank: rank)
        monkeypatch.setattr(distributed, 'get_world_size', lambda: 3)
        shards.append(list(build_eval_loader(list(range(10)), max_items=7).sampler))
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]  # round-robin, in order: nothing padded, nothing counted twice
    monkeypatch.undo()
    assert list(build_eval_loader(list(range(10)), max_items=7).sampler) == list(range(7))


# --- command line --------------------------------------------------------------------------------------------

def test_command_line_writes_table_json_and_markdown(tmp_path, synthetic_data_cfg, capsys):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    assert load_tool('test_pda').run([config, '--checkpoint', checkpoint, '--max-clips', '1', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert '| distance | DAVSS mIoU | propagation only mIoU |' in out and 'upper bound' in out
    with open(tmp_path / 'pda_test' / 'final' / 'pda.json') as f:  # <experiment>/<checkpoint file stem>
        result = json.load(f)  # strict JSON: NaN IoUs are written as null
    assert result['distances'] == [1, 9] and result['n_clips'] == 1 and result['align_corners'] is True
    assert len(result['davss']['iou']) == 2 and len(result['propagation_only']['miou']) == 2
    assert result['class_names'][0] == 'road'
    markdown = (tmp_path / 'pda_test' / 'final' / 'pda.md').read_text()
    assert '| d=1 | d=9 | per frame |' in markdown and '| road |' in markdown
    assert not [p for p in os.listdir(tmp_path / 'pda_test' / 'final') if p.endswith('.tmp')]


def _fails_with(capsys, argv, *fragments):
    assert load_tool('test_pda').run(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: ')
    for fragment in fragments:
        assert fragment in err, err


def test_checkpoint_of_another_class_count_fails_clearly(tmp_path, synthetic_data_cfg, capsys):
    config, _ = write_experiment(tmp_path, synthetic_data_cfg)
    other = tmp_path / 'camvid.pth'
    torch.save(build_scnet(tiny_model_cfg(n_classes=11)).state_dict(), other)
    _fails_with(capsys, [config, '--checkpoint', str(other)], 'predicts 11 classes', 'model.n_classes=19')


def test_missing_frame_fails_before_evaluation(tmp_path, synthetic_data_cfg, synthetic_root, capsys):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns('synthetic_extra'))
    with open(root / 'list' / 'train.txt') as f:
        first_frame = f.readline().split()[0]
    gone = first_frame.replace('000019_leftImg8bit', '000012_leftImg8bit')  # frame t-7 of clip 0
    os.remove(root / gone)
    data_cfg = dict(synthetic_data_cfg, root=str(root), train_list=str(root / 'list' / 'train.txt'))
    config, _ = write_experiment(tmp_path, data_cfg)
    # The checkpoint argument does not exist either: the frame check must come first and name the frame.
    _fails_with(capsys, [config, '--checkpoint', str(tmp_path / 'none.pth')], 'train.txt:1', gone, 'missing')


def test_unwritable_output_folder_fails_clearly(tmp_path, synthetic_data_cfg, capsys):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    _fails_with(capsys, [config, '--checkpoint', checkpoint, '--output', str(blocker / 'out')],
                str(blocker / 'out'), 'cannot be created or written')
