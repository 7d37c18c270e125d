"""Both resize conventions of the Cityscapes test scripts from one PDA run: the shared pass gives, per convention,
the confusion matrices of a run under that convention alone (every row, exact and ``batched``), and pda.json /
pda.md label each with the original test script it comes from."""
import json
import os

import pytest
import torch
from helpers import REPO_ROOT, TINY_OPTS, load_tool, varied_tiny_scnet

from lib.dataset import build_dataset, build_eval_loader
from lib.eval.pda import evaluate_pda

DISTANCES = [1, 5, 9]
ROWS = ('davss', 'propagation_only', 'per_frame')
LAST, RELEASE = 'jfzhuang/DAVSS 148b579 test_PDA.py', 'jfzhuang/DAVSS a03c1ea test_PDA.py'


@pytest.mark.parametrize('batched', [False, True])
def test_shared_pass_gives_each_conventions_own_matrices(synthetic_data_cfg, batched):
    loader = build_eval_loader(build_dataset(synthetic_data_cfg, 'train', 'pda'), batch_size=2)
    shared = evaluate_pda(varied_tiny_scnet(align_corners=False), loader, 19, DISTANCES, progress=False,
                          batched=batched, conventions=[False, True])
    alone = {ac: evaluate_pda(varied_tiny_scnet(align_corners=ac), loader, 19, DISTANCES, progress=False,
                              batched=batched) for ac in (False, True)}
    (other,) = shared['other_protocols']
    assert shared['align_corners'] is False and other['align_corners'] is True
    for ac, result in ((False, shared), (True, other)):
        for row in ROWS:
            assert result['confusion'][row] == alone[ac]['confusion'][row], (ac, row)
    # The conventions label pixels differently, so the comparison above can tell them apart.
    assert alone[False]['confusion']['davss'] != alone[True]['confusion']['davss']


@pytest.mark.slow
def test_cityscapes_run_reports_both_scripts_labelled(synthetic_root, tmp_path):
    """The synthetic frames stand in for Cityscapes (the same 19 train ids; data.name picks the labels)."""
    checkpoint = tmp_path / 'published.pth'
    torch.save(varied_tiny_scnet().state_dict(), checkpoint)
    opts = ['data.name=cityscapes', f'data.root={synthetic_root}', 'data.num_workers=0', 'data.pin_memory=false',
            f'data.val_list={os.path.join(synthetic_root, "list", "val.txt")}', f'eval.distances={DISTANCES}',
            'device=cpu', *TINY_OPTS]

    def run(experiment, name, *extra):
        out = tmp_path / experiment / name
        config = os.path.join(REPO_ROOT, 'exp', experiment, 'config.yaml')
        assert load_tool('test_pda').run([config, '--checkpoint', checkpoint, '--no-progress', '--max-clips', '1',
                                          '--output', out, '--opts', *opts, *extra]) == 0
        return json.loads((out / 'pda.json').read_text()), (out / 'pda.md').read_text()

    alone = {ac: run('spatial_correction_cityscapes', str(ac), f'eval.align_corners={str(ac).lower()}')[0]
             for ac in (False, True)}
    for experiment, headline in (('spatial_correction_cityscapes', False),
                                 ('spatial_correction_cityscapes_release', True)):
        both, markdown = run(experiment, 'both')
        (other,) = both['other_protocols']
        assert [both['protocol']['align_corners'], other['protocol']['align_corners']] == [headline, not headline]
        for result in (both, other):
            ac = result['protocol']['align_corners']
            assert alone[ac]['other_protocols'] == [] and alone[ac]['protocol'] == result['protocol']
            assert result['protocol']['source'].startswith(RELEASE if ac else LAST)
            assert {row: result['confusion'][row] for row in ROWS} == {row: alone[ac]['confusion'][row] for row in ROWS}
            assert f'align_corners={ac} ({result["protocol"]["source"]})' in markdown
        assert markdown.index(f'align_corners={headline}') < markdown.index(f'## Also: align_corners={not headline}')
