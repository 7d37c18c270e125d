"""tools/export.py and lib/infer/export.py: the two ONNX graphs of a tiny SCNet against PyTorch (onnxruntime)."""
import json
import os

import pytest
import torch
from helpers import load_tool, write_video_model

from lib.infer.export import GRAPHS, INPUTS, OUTPUTS, example_inputs, ort_session, run_session

pytest.importorskip('onnxruntime', reason='onnxruntime is in requirements.txt; the export cannot be checked without')

SIZE = (128, 160)
OTHER_SIZE = (192, 128)  # a different height and width: the graphs are dynamic

export_tool = load_tool('export')


def random_batchnorm_statistics(net):
    """So that the normalisation layers are exercised and not the identity."""
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    return write_video_model(str(tmp_path_factory.mktemp('model')), random_batchnorm_statistics)


@pytest.fixture(scope='module')
def exported(model_files, tmp_path_factory):
    """One export by the tool (the slow part: tracing), shared by the tests of this module."""
    config, checkpoint, _ = model_files
    out = tmp_path_factory.mktemp('export') / 'tiny'
    code = export_tool.run([config, '--checkpoint', checkpoint, '--output', str(out),
                             '--size', *map(str, SIZE), '--parity-size', *map(str, OTHER_SIZE), '--threads', '1'])
    return code, out


@pytest.mark.slow
def test_export_writes_both_graphs_and_a_passing_parity_report(exported):
    code, out = exported
    assert code == 0
    assert sorted(os.listdir(out)) == ['.davss', 'key_step.onnx', 'non_key_step.onnx', 'parity.json']
    assert not os.path.exists(str(out) + '.partial')
    report = json.loads((out / 'parity.json').read_text())
    assert report['ok'] is True and report['opset'] == 18
    for graph in GRAPHS:
        assert report[graph]['max_rel_logit_error'] < 1e-4
        assert report[graph]['argmax_agreement'] == 1.0
        assert set(report[graph]['sizes']) == {'128x160', '192x128'}


def frames_pair(size, seed):
    generator = torch.Generator().manual_seed(seed)
    previous = torch.rand(1, 3, *size, generator=generator)
    current = torch.roll(previous, shifts=(2, 3), dims=(2, 3)) * 0.9 + 0.05
    return current, previous


@pytest.mark.slow
@pytest.mark.parametrize('size', [SIZE, OTHER_SIZE, (256, 224)])
def test_graphs_match_scnet_steps_at_several_sizes(model_files, exported, size):
    """Independent reference: SCNet's own steps in the paper's order (full-resolution merge and argmax)."""
    _, out = exported
    _, _, net = model_files
    current, previous = frames_pair(size, seed=size[0])
    with torch.no_grad():
        state = net.key_frame(previous)
        key_labels = net.to_full_resolution(state.logits).argmax(1)
        carried = net.propagate(state, net.estimate_flow(current, previous))
        merged = net.correct(carried, current, full_resolution=True)['merged']

    key = run_session(ort_session(str(out / 'key_step.onnx'), 1), 'key_step', (previous,))
    assert torch.allclose(key['logits'], state.logits, rtol=1e-4, atol=1e-5)
    assert (key['image_quarter'] - state.image).abs().max() < 1e-4  # bilinear resize, another rounding order
    assert (key['labels'] == key_labels).float().mean() > 0.999

    non_key = run_session(ort_session(str(out / 'non_key_step.onnx'), 1), 'non_key_step',
                          (state.logits, state.image, current, previous))
    assert torch.allclose(non_key['logits_out'], carried.logits, rtol=1e-4, atol=1e-5)
    assert torch.allclose(non_key['merged'], merged, rtol=1e-3, atol=1e-4)
    assert non_key['merged'].shape == (1, 19, *size)
    assert non_key['labels'].dtype == torch.int64 and (non_key['labels'] == merged.argmax(1)).float().mean() > 0.999


@pytest.mark.slow
def test_graph_interface_names(exported):
    _, out = exported
    import onnx

    for graph in GRAPHS:
        model = onnx.load(str(out / f'{graph}.onnx'))
        assert [i.name for i in model.graph.input] == list(INPUTS[graph])
        assert [o.name for o in model.graph.output] == list(OUTPUTS[graph])
        assert model.opset_import[0].version == 18


def test_parity_report_detects_a_wrong_graph(model_files):
    """The comparison must fail when the graph computes something else (here: another network's outputs)."""
    from lib.infer.export import compare_outputs

    _, _, net = model_files
    inputs = example_inputs(net, SIZE)['key_step']
    with torch.no_grad():
        state = net.key_frame(inputs[0])
    reference = {'logits': state.logits, 'image_quarter': state.image, 'labels': state.logits.argmax(1)}
    wrong = dict(reference, logits=state.logits + 0.5 * state.logits.abs().max(), labels=(reference['labels'] + 1) % 19)
    good = compare_outputs('key_step', reference, reference)
    bad = compare_outputs('key_step', reference, wrong)
    assert good['max_rel_logit_error'] == 0 and good['argmax_agreement'] == 1
    assert bad['max_rel_logit_error'] == pytest.approx(0.5) and bad['argmax_agreement'] == 0


def test_export_refuses_existing_output_and_bad_sizes(model_files, tmp_path, capsys):
    config, checkpoint, _ = model_files
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    args = [config, '--checkpoint', checkpoint, '--output', str(out), '--size', '128', '128']
    assert export_tool.run(args) == 1
    assert 'already exists' in capsys.readouterr().err
    assert export_tool.run(args + ['--overwrite']) == 1
    assert 'not written by DAVSS' in capsys.readouterr().err
    assert (out / 'notes.txt').read_text() == 'keep me' and os.listdir(out) == ['notes.txt']
    with pytest.raises(SystemExit):
        export_tool.parse_args([config, '--checkpoint', checkpoint, '--output', 'x', '--size', '130', '128'])
    assert '--size 130 128: expected multiples of 4' in capsys.readouterr().err
    assert export_tool.run([config, '--checkpoint', str(tmp_path / 'none.pth'),
                             '--output', str(tmp_path / 'new')]) == 1
    assert not os.path.exists(tmp_path / 'new') and not os.path.exists(tmp_path / 'new.partial')
