"""Reading checkpoints (lib.model.checkpoint): DDP prefixes, nested state dicts, the published file kinds, and one
clear line for every file that cannot be used."""
import os

import pytest
import torch
from helpers import TINY_WIDTHS

from lib.model import SCNet, SCNetDMNet
from lib.model.checkpoint import load_part, load_pretrained, load_scnet, load_state_dict, read_checkpoint
from lib.utils.atomic import save_torch
from lib.utils.errors import UserError

TINY = {name: TINY_WIDTHS[name] for name in ('deeplab', 'flownet')}
MODEL_CFG = {'n_classes': 5, 'align_corners': True, **TINY_WIDTHS}


def tiny_scnet(seed, n_classes=5):
    torch.manual_seed(seed)
    return SCNet(n_classes, cfnet=TINY_WIDTHS['cfnet'], **TINY)


def assert_same_tensors(a, b):
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_prefixed_checkpoint_round_trip(tmp_path):
    source = tiny_scnet(0)
    path = str(tmp_path / 'best.pth')
    save_torch({f'module.{k}': v for k, v in source.state_dict().items()}, path)
    assert os.listdir(tmp_path) == ['best.pth']  # written atomically, no temporary left behind
    assert_same_tensors(load_scnet(MODEL_CFG, path).state_dict(), source.state_dict())


def test_nested_state_dict_is_accepted(tmp_path):
    source = tiny_scnet(0)
    path = str(tmp_path / 'now.pth')
    torch.save({'model': source.state_dict(), 'epoch': 3}, path)
    assert_same_tensors(load_state_dict(path), source.state_dict())


def test_dmnet_only_file_goes_into_dmnet(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    deeplab_before = {k: v.clone() for k, v in net.deeplab.state_dict().items()}
    path = str(tmp_path / 'dmnet.pth')
    torch.save(source.dmnet.state_dict(), path)
    load_part(net.dmnet, 'dmnet', path, 'init.dmnet')
    assert_same_tensors(net.dmnet.state_dict(), source.dmnet.state_dict())
    assert_same_tensors(net.deeplab.state_dict(), deeplab_before)
    with pytest.raises(UserError, match='holds only the dmnet weights'):
        load_scnet(MODEL_CFG, path)


@pytest.mark.parametrize('content, message', [
    (b'this is not a checkpoint', 'not a PyTorch checkpoint readable with weights_only=True'),
    ([torch.zeros(2)], 'holds no state_dict'),
    ({'weights': 'a string'}, 'holds no state_dict'),
])
def test_malformed_file_gives_one_line_error_naming_it(tmp_path, content, message):
    path = str(tmp_path / 'bad.pth')
    if isinstance(content, bytes):
        with open(path, 'wb') as f:
            f.write(content)
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=message) as err:
        load_scnet(MODEL_CFG, path)
    assert str(err.value).startswith(path) and '\n' not in str(err.value)


class RunsCode:
    def __reduce__(self):
        return (os.system, ('echo this would have run',))


def test_pickled_code_is_refused_naming_the_global_and_the_safe_way_to_look(tmp_path):
    path = str(tmp_path / 'code.pth')
    torch.save({'w': torch.zeros(1), 'obj': RunsCode()}, path)
    with pytest.raises(UserError) as err:
        read_checkpoint(path, '--checkpoint')
    message = str(err.value)
    assert message.startswith(f'--checkpoint: {path}: refused by torch.load(weights_only=True)')
    assert 'system' in message and 'get_unsafe_globals_in_checkpoint' in message and '\n' not in message


def test_missing_file_folder_and_link_loop_are_told_apart(tmp_path):
    with pytest.raises(UserError, match='checkpoint file not found'):
        read_checkpoint(str(tmp_path / 'absent.pth'))
    with pytest.raises(UserError, match='is a folder, not a checkpoint file'):
        read_checkpoint(str(tmp_path))
    os.symlink(tmp_path / 'loop.pth', tmp_path / 'loop.pth')
    with pytest.raises(UserError, match='symbolic link to nothing'):
        read_checkpoint(str(tmp_path / 'loop.pth'))


def test_non_finite_weights_are_refused(tmp_path):
    state = tiny_scnet(0).state_dict()
    state['cfnet.conv1.0.weight'][0, 0, 0, 0] = float('nan')
    path = str(tmp_path / 'diverged.pth')
    torch.save(state, path)
    with pytest.raises(UserError, match=r'1 tensor\(s\) hold NaN or infinite values \(first: cfnet\.conv1\.0\.weight'):
        load_scnet(MODEL_CFG, path)


def test_mismatched_checkpoint_lists_every_kind_of_problem(tmp_path):
    state = tiny_scnet(0, n_classes=5).state_dict()
    del state['cfnet.conv1.0.weight']
    state['extra.weight'] = torch.zeros(1)
    state['flownet.conv1.0.weight'] = torch.zeros(1)
    path = str(tmp_path / 'other.pth')
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        load_scnet(MODEL_CFG, path)
    message = str(err.value)
    assert message.startswith(f'{path}: does not fit SCNet:') and '\n' not in message
    assert '1 missing (cfnet.conv1.0.weight)' in message
    assert '1 unexpected (extra.weight)' in message
    assert '1 with another shape (flownet.conv1.0.weight: file [1] vs model [' in message


def test_other_class_count_is_named(tmp_path):
    path = str(tmp_path / 'camvid.pth')
    torch.save(tiny_scnet(0, n_classes=4).state_dict(), path)
    with pytest.raises(UserError, match=r'predicts 4 classes .* model\.n_classes=5'):
        load_scnet(MODEL_CFG, path)


def test_dmnet_stage_checkpoint_does_not_fit_scnet(tmp_path):
    torch.manual_seed(0)
    path = str(tmp_path / 'dmnet_stage.pth')
    torch.save(SCNetDMNet(5, **TINY).state_dict(), path)
    with pytest.raises(UserError, match=r'does not fit SCNet: .*missing \(cfnet\.conv1\.0\.weight'):
        load_scnet(MODEL_CFG, path)


def test_pretrained_file_loads_deeplab_and_flownet(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    dmnet_before = {k: v.clone() for k, v in net.dmnet.state_dict().items()}
    parts = {k: v for k, v in source.state_dict().items() if k.startswith(('deeplab.', 'flownet.'))}
    path = str(tmp_path / 'pretrained_cityscapes.pth')
    torch.save({f'module.{k}': v for k, v in parts.items()}, path)
    assert load_pretrained(net, path, 'init.pretrained') == ['deeplab', 'flownet']
    assert_same_tensors(net.deeplab.state_dict(), source.deeplab.state_dict())
    assert_same_tensors(net.flownet.state_dict(), source.flownet.state_dict())
    assert_same_tensors(net.dmnet.state_dict(), dmnet_before)


def test_whole_scnet_file_as_pretrained_of_the_dmnet_stage(tmp_path):
    """SCNetDMNet has no CFNet (its cfnet is None): a whole SCNet file fills the networks it has, cfnet keys unused."""
    source = tiny_scnet(0)
    path = str(tmp_path / 'spatial_correction.pth')
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    net = SCNetDMNet(5, **TINY)
    assert load_pretrained(net, path, 'init.pretrained') == ['deeplab', 'flownet', 'dmnet']
    assert_same_tensors(net.deeplab.state_dict(), source.deeplab.state_dict())
    assert_same_tensors(net.dmnet.state_dict(), source.dmnet.state_dict())


def test_bare_deeplab_keys_fill_the_deeplab(tmp_path):
    source, net = tiny_scnet(0), tiny_scnet(1)
    path = str(tmp_path / 'deeplab.pth')
    torch.save(source.deeplab.state_dict(), path)
    load_part(net.deeplab, 'deeplab', path, 'checkpoint')
    assert_same_tensors(net.deeplab.state_dict(), source.deeplab.state_dict())


def test_pretrained_file_without_a_required_network(tmp_path):
    path = str(tmp_path / 'unrelated.pth')
    torch.save({'encoder.weight': torch.zeros(3)}, path)
    with pytest.raises(UserError, match=r'init\.pretrained: .* holds no weights for deeplab, flownet \(top-level '
                                        r'names in the file: encoder\)'):
        load_pretrained(tiny_scnet(0), path, 'init.pretrained')
