"""The training log a person reads: time left and peak memory in log.txt, every logged scalar in metrics.jsonl,
and metrics.jsonl across --resume (the lines after now.pth go, the run writes them again) and --overwrite."""
import json
import re

from helpers import flow_cfg, train_killed_at_step

from lib.train import engine
from lib.utils.logger import keep_lines_until

OPTS = ('train.max_iters=7', 'train.checkpoint_every=2', 'deterministic=true')  # 3 iterations per epoch


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_and_metrics_of_a_run(tmp_path, synthetic_data_cfg):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(flow_cfg(str(tmp_path), data, 'run', 'train.val_every=1', 'train.val_max_clips=2'))
    rows = lines(tmp_path / 'run' / 'metrics.jsonl')
    train = [row for row in rows if 'train/loss_epe' in row]
    assert [row['iteration'] for row in train] == [1, 2, 3, 4, 5]
    assert all(set(row) == {'iteration', 'train/loss_epe', 'train/lr_flownet'} for row in train)
    assert [row['iteration'] for row in rows if 'val/epe' in row] == [3, 5]  # after each epoch
    log = (tmp_path / 'run' / 'log.txt').read_text()
    found = re.findall(r'iter (\d)/5 .* eta (\d+:\d\d:\d\d) peak memory (\d+\.\d\d) GiB', log)
    assert [int(i) for i, _, _ in found] == [1, 2, 3, 4, 5] and found[-1][1] == '0:00:00'
    assert all(float(gib) > 0.05 for _, _, gib in found)  # this process holds torch: far more than 50 MiB


def test_resume_rewrites_the_lines_after_the_checkpoint_and_overwrite_starts_afresh(tmp_path, synthetic_data_cfg,
                                                                                   monkeypatch):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(flow_cfg(str(tmp_path), data, 'whole', *OPTS))
    train_killed_at_step(monkeypatch, engine, 6, flow_cfg(str(tmp_path), data, 'killed', *OPTS))
    killed = tmp_path / 'killed' / 'metrics.jsonl'
    assert [row['iteration'] for row in lines(killed)] == [1, 2, 3, 4, 5]  # now.pth holds iteration 4
    engine.main(flow_cfg(str(tmp_path), data, 'killed', *OPTS), resume=True)
    whole = lines(tmp_path / 'whole' / 'metrics.jsonl')
    assert [row['iteration'] for row in whole] == list(range(1, 8))
    assert lines(killed) == whole  # the resumed run's lines are the uninterrupted run's, each once

    engine.main(flow_cfg(str(tmp_path), data, 'killed', *OPTS, 'train.max_iters=2'), overwrite=True)
    assert [row['iteration'] for row in lines(killed)] == [1, 2]


def test_keep_lines_until_drops_later_and_torn_lines(tmp_path):
    path = tmp_path / 'metrics.jsonl'
    path.write_text(''.join(json.dumps({'iteration': i, 'x': i / 2}) + '\n' for i in range(1, 6)) + '{"iterat')
    keep_lines_until(str(path), 3)
    assert lines(path) == [{'iteration': i, 'x': i / 2} for i in (1, 2, 3)]
