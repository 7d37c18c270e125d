"""Loading published-style checkpoints: DDP prefixes, the DMNet-only file, the pretrained file, clear errors."""
import os

import pytest
import torch
from helpers import TINY_WIDTHS

from lib.model import SCNet, SCNetDMNet
from lib.utils.checkpoint import load_checkpoint, load_pretrained, load_published, save_checkpoint
from lib.utils.errors import UserError

TINY = {name: TINY_WIDTHS[name] for name in ('deeplab', 'flownet')}


def tiny_scnet(seed, n_classes=5):
    torch.manual_seed(seed)
    return SCNet(n_classes, cfnet=TINY_WIDTHS['cfnet'], **TINY)


def assert_same_tensors(a, b):
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_prefixed_checkpoint_round_trip(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    path = str(tmp_path / 'best.pth')
    save_checkpoint({f'module.{k}': v for k, v in source.state_dict().items()}, path)
    assert os.listdir(tmp_path) == ['best.pth']  # written atomically, no temporary left behind

    report = load_published(net, path)
    assert report.target == 'model' and not (report.missing or report.unexpected or report.mismatched)
    assert_same_tensors(net.state_dict(), source.state_dict())


def test_nested_state_dict_is_accepted(tmp_path):
    source = tiny_scnet(0)
    path = str(tmp_path / 'now.pth')
    torch.save({'model': source.state_dict(), 'epoch': 3}, path)
    assert_same_tensors(load_checkpoint(path), source.state_dict())


def test_dmnet_only_file_goes_into_dmnet(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    deeplab_before = {k: v.clone() for k, v in net.deeplab.state_dict().items()}
    path = str(tmp_path / 'dmnet.pth')
    torch.save(source.dmnet.state_dict(), path)

    report = load_published(net, path)
    assert report.target == 'dmnet'
    assert_same_tensors(net.dmnet.state_dict(), source.dmnet.state_dict())
    assert_same_tensors(net.deeplab.state_dict(), deeplab_before)


@pytest.mark.parametrize('content, message', [
    (b'this is not a checkpoint', 'not a PyTorch checkpoint readable with weights_only=True'),
    ([torch.zeros(2)], 'expected a state_dict'),
    ({'weights': 'a string'}, 'expected a state_dict'),
])
def test_malformed_file_gives_one_line_error_naming_it(tmp_path, content, message):
    path = str(tmp_path / 'bad.pth')
    if isinstance(content, bytes):
        with open(path, 'wb') as f:
            f.write(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=message) as err:
        load_published(tiny_scnet(0), path)
    assert str(err.value).startswith(path) and '\n' not in str(err.value)


def test_pickled_code_is_refused(tmp_path):
    path = str(tmp_path / 'code.pth')
    torch.save({'w': torch.zeros(1), 'obj': UserError('not a tensor')}, path)
    with pytest.raises(UserError, match='weights_only=True'):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='checkpoint file not found'):
        load_checkpoint(str(tmp_path / 'absent.pth'))


def test_mismatched_checkpoint_lists_every_kind_of_problem(tmp_path):
    state = tiny_scnet(0, n_classes=4).state_dict()
    del state['cfnet.conv1.0.weight']
    state['extra.weight'] = torch.zeros(1)
    path = str(tmp_path / 'other.pth')
    torch.save(state, path)
    net = tiny_scnet(1, n_classes=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    with pytest.raises(UserError) as err:
        load_published(net, path)
    message = str(err.value)
    assert message.startswith(f'{path}: does not fit SCNet:') and '\n' not in message
    assert '1 missing (cfnet.conv1.0.weight)' in message
    assert '1 unexpected (extra.weight)' in message
    assert '4 with another shape (deeplab.logits.weight: file [4, 32, 1, 1] vs model [5, 32, 1, 1]' in message
    assert_same_tensors(net.state_dict(), before)  # nothing loaded on error

    report = load_published(net, path, strict=False)
    assert len(report.loaded) == len(before) - 5 and 'missing: cfnet.* (1)' in report.summary()
    assert torch.equal(net.state_dict()['flownet.conv1.0.weight'], state['flownet.conv1.0.weight'])


def test_dmnet_stage_checkpoint_does_not_fit_scnet(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / 'dmnet_stage.pth')
    torch.save(SCNetDMNet(5, **TINY).state_dict(), path)
    with pytest.raises(UserError, match=r'does not fit SCNet: 66 missing \(cfnet\.conv1\.0\.weight'):
        load_published(tiny_scnet(0), path)


def test_pretrained_file_loads_deeplab_and_flownet(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    parts = {k: v for k, v in source.state_dict().items() if k.startswith(('deeplab.', 'flownet.'))}
    path = str(tmp_path / 'pretrained_cityscapes.pth')
    torch.save({f'module.{k}': v for k, v in parts.items()}, path)
    report = load_pretrained(net, path)
    assert report.target == 'model' and sorted(report.loaded) == sorted(parts)
    assert {k.split('.')[0] for k in report.missing} == {'cfnet', 'dmnet'}
    assert_same_tensors(net.deeplab.state_dict(), source.deeplab.state_dict())
    assert_same_tensors(net.flownet.state_dict(), source.flownet.state_dict())


def test_pretrained_file_of_bare_deeplab_keys(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    path = str(tmp_path / 'deeplab.pth')
    torch.save(source.deeplab.state_dict(), path)
    assert load_pretrained(net, path).target == 'deeplab'
    assert_same_tensors(net.deeplab.state_dict(), source.deeplab.state_dict())


def test_pretrained_file_matching_nothing(tmp_path):
    path = str(tmp_path / 'unrelated.pth')
    torch.save({'encoder.weight': torch.zeros(3)}, path)
    with pytest.raises(UserError, match='no tensor matches SCNet'):
        load_pretrained(tiny_scnet(0), path)
