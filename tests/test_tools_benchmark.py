"""tools/benchmark.py end to end on a tiny network: what its JSON and markdown hold, and what it refuses."""
import json
import statistics

import cv2
import numpy as np
import pytest
import torch
from helpers import load_tool, width_opts

from lib.infer.fast import resolve_dtype
from lib.infer.labels import TAILS


@pytest.mark.slow
def test_tiny_benchmark_run_writes_complete_json_and_refuses_a_foreign_file(tmp_path, capsys):
    frames = tmp_path / 'frames'
    frames.mkdir()
    generator = np.random.default_rng(0)
    for t in range(4):
        cv2.imwrite(str(frames / f'{t:03d}.png'), generator.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    out = tmp_path / 'bench.json'
    argv = ['--opts', *width_opts(), '--device', 'cpu', '--sizes', '64x128', '--flops-sizes', '128x256',
            '--repeats', '2', '--warmup', '0', '--agreement-frames', '2', '--threads', '1', '--input', frames,
            '--interval', '3', '--output', out]
    benchmark = load_tool('benchmark')
    assert benchmark.run(argv) == 0
    result = json.loads(out.read_text())
    assert (tmp_path / 'bench.md').read_text().startswith('# Benchmark: ')

    entry = result['sizes'][0]
    rows = {(r['path'], r['name']): r for r in entry['rows']}
    expected = {(p, n) for p in ('exact', 'fast') for n in ('key_frame', 'non_key_frame', 'flow', 'warp', 'correct')}
    assert set(rows) == expected | {('fast', f'tail_{t}') for t in TAILS}
    for key, row in rows.items():
        assert len(row['latency_ms_runs']) >= 2, key  # cheap rows get more runs
        assert row['latency_ms'] == pytest.approx(statistics.median(row['latency_ms_runs'])), key
    # FLOPs: the non-key frame is at least its parts (the labels add the resizes of the exact tail)
    non_key = rows[('exact', 'non_key_frame')]['flops']
    assert non_key >= sum(rows[('exact', n)]['flops'] for n in ('flow', 'warp', 'correct')) > 0
    assert result['flops']['64x128']['key_frame'] == rows[('exact', 'key_frame')]['flops'] > 0
    assert set(result['flops']) == {'64x128', '128x256'}
    key, non_key_ms = rows[('fast', 'key_frame')]['latency_ms'], rows[('fast', 'non_key_frame')]['latency_ms']
    assert entry['comparisons']['fast_non_key_over_key'] == pytest.approx(non_key_ms / key)
    assert entry['comparisons']['fast_speedup_over_per_frame_k10'] == pytest.approx(10 * key / (key + 9 * non_key_ms))

    # the fast path and its sparse tail give the exact labels; the quarter tails are approximations
    assert entry['agreement']['fast_vs_exact']['min'] > 0.999
    assert set(entry['agreement']) == {'fast_vs_exact'} | {f'fast_tail_{t}_vs_exact' for t in TAILS if t != 'sparse'}
    trained = result['agreement_input']['fast_vs_exact']
    assert set(trained['per_distance']) == {'0', '1', '2'} and trained['per_distance']['0'] > 0.999

    peak = result['peak_gflops']['bf16' if resolve_dtype('auto', 'cpu') is torch.bfloat16 else 'fp32']
    fraction = entry['fraction_of_peak']['fast']
    assert fraction['key_frame'] == pytest.approx(rows[('fast', 'key_frame')]['gflops_per_s'] / peak)
    assert fraction['reliable'] == (not entry['load']['busy'] and not result['load'][0]['busy'])
    assert [g['group'] for g in result['load']] == ['peak', '64x128', 'resample2d']
    assert result['reliable'] == (not any(g['busy'] for g in result['load']))
    assert result['copy_bandwidth']['gb_per_s'] > 0 and {r['impl'] for r in result['resample2d']} == {'grid_sample'}

    foreign = tmp_path / 'notes.json'
    foreign.write_text('{"mine": 1}\n')
    capsys.readouterr()
    assert benchmark.run(argv[:-1] + [foreign]) == 1
    assert 'was not written by tools/benchmark.py' in capsys.readouterr().err
    assert foreign.read_text() == '{"mine": 1}\n'
