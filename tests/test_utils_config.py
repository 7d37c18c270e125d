"""Configs by behaviour: ``_base_`` inheritance, the one experiment-naming rule, the class-count check, every
experiment of exp/ loading with an ``init:`` chain of existing stages, and scripts that find their own config."""
import glob
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from lib.train.stages import STAGES
from lib.utils.config import DEFAULTS, REPO_ROOT, experiment_name, load_config
from lib.utils.errors import UserError

EXPERIMENTS = sorted(p for p in glob.glob(os.path.join(REPO_ROOT, 'exp', '*', '*.yaml'))
                     if os.sep + '_base_' + os.sep not in p)


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(content, f)
    return str(path)


def test_base_files_are_merged_first_in_order_then_the_file_itself(tmp_path):
    write(tmp_path / 'base' / 'a.yaml', {'seed': 1, 'train': {'lr': 0.5, 'epochs': 3}, 'data': {'hflip': True}})
    write(tmp_path / 'base' / 'b.yaml', {'_base_': 'a.yaml', 'train': {'epochs': 7}})
    child = write(tmp_path / 'exp' / 'config.yaml', {'_base_': ['../base/b.yaml'], 'train': {'lr': 0.25}})
    cfg = load_config(child)
    # b over a, the file over both; keys none of them states keep the defaults.
    assert (cfg['seed'], cfg['train']['epochs'], cfg['train']['lr'], cfg['data']['hflip']) == (1, 7, 0.25, True)
    assert cfg['train']['batch_size'] == DEFAULTS['train']['batch_size']
    assert '_base_' not in cfg


def test_base_errors_name_the_file(tmp_path):
    child = write(tmp_path / 'config.yaml', {'_base_': ['missing.yaml']})
    with pytest.raises(UserError, match=r'missing\.yaml: config file not found \(_base_ of .*config\.yaml\)'):
        load_config(child)
    write(tmp_path / 'typo.yaml', {'train': {'learning_rate': 1}})
    child = write(tmp_path / 'config.yaml', {'_base_': 'typo.yaml'})
    with pytest.raises(UserError, match=r'typo\.yaml: unknown config key "train\.learning_rate"'):
        load_config(child)
    write(tmp_path / 'a.yaml', {'_base_': 'b.yaml'})
    write(tmp_path / 'b.yaml', {'_base_': 'a.yaml'})
    with pytest.raises(UserError, match='include each other'):
        load_config(str(tmp_path / 'a.yaml'))
    child = write(tmp_path / 'config.yaml', {'_base_': {'a': 1}})
    with pytest.raises(UserError, match='expected a file name or a list of them'):
        load_config(child)


def test_experiment_name_follows_the_file_unless_set(tmp_path):
    assert experiment_name({'experiment': None}, 'exp/dmnet_cityscapes/config.yaml') == 'dmnet_cityscapes'
    assert experiment_name({'experiment': None}, 'exp/synthetic/flow.yaml') == 'synthetic_flow'
    assert experiment_name({'experiment': 'mine'}, 'exp/synthetic/flow.yaml') == 'mine'
    copied = write(tmp_path / 'my_copy' / 'config.yaml', {'stage': 'dmnet'})
    assert load_config(copied)['experiment'] == 'my_copy'
    assert load_config(copied, ['experiment=other'])['experiment'] == 'other'
    assert load_config()['experiment'] is None


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_every_experiment_loads_and_its_init_chain_names_existing_stages(path):
    cfg = load_config(path)
    assert cfg['stage'] in STAGES and cfg['experiment'] == experiment_name({'experiment': None}, path)
    outputs = {experiment_name({'experiment': None}, p): load_config(p)['stage'] for p in EXPERIMENTS}
    save_root = cfg['train']['save_root']
    for key, checkpoint in cfg['init'].items():
        if not checkpoint or key == 'pretrained':
            continue
        producer = os.path.relpath(checkpoint, save_root).split(os.sep)[0]
        assert producer in outputs, f'init.{key}: {checkpoint} is the output of no experiment of exp/'
        # init.dmnet comes from a dmnet (or correction) run, init.deeplab from segmentation, ...
        assert outputs[producer] in {'deeplab': ('segmentation', 'dmnet', 'correction'),
                                     'flownet': ('flow', 'dmnet', 'correction'),
                                     'dmnet': ('dmnet', 'correction')}[key], (key, producer)


@pytest.mark.parametrize('override, message', [
    ('model.n_classes=19', 'model.n_classes: 19, but data.name=camvid has 11 classes'),
    ('experiment=../userhome', 'experiment: expected a name of one path component'),
    ('experiment=/abs/path', 'experiment: expected a name of one path component'),
    ('experiment=123', 'experiment: expected a name of one path component'),
    ('data.crop_size=[0,0]', 'data.crop_size: expected a list of two values, each an integer >= 4'),
    ('data.crop_size=[64]', 'data.crop_size: expected a list of two values'),
    ('data.crop_size=[-8,16]', 'data.crop_size: expected a list of two values, each an integer >= 4'),
    ('data.crop_size=[66,128]', 'data.crop_size: [66, 128]: the networks need sides that are multiples of 4'),
    ('device=gpu0', 'device: expected auto | cpu | cuda | cuda:N'),
    ('data.num_workers=-1', 'data.num_workers: expected an integer >= 0'),
    ('eval.distances=[a]', 'eval.distances: expected a non-empty list of whole distances in 1..9'),
    ('eval.distances=[1.7,9.9]', 'eval.distances: expected a non-empty list of whole distances in 1..9'),
    ('eval.batch_size=0', 'eval.batch_size: expected an integer >= 1'),
    ('data.scale_range=[-1,2]', 'data.scale_range: expected a list of two values, each a number > 0'),
    ('data.scale_range=[2,1]', 'data.scale_range: [2, 1]: expected [low, high] with low <= high'),
    ('model.deeplab.width_mult=-1', 'model.deeplab.width_mult: expected a number > 0'),
    ('model.align_corners=null', 'model.align_corners: expected true or false'),
    ('eval.align_corners=yes please', 'eval.align_corners: expected true, false, null or a list of distinct'),
    ('eval.align_corners=[true,true]', 'eval.align_corners: expected true, false, null or a list of distinct'),
    ('eval.align_corners=[]', 'eval.align_corners: expected true, false, null or a list of distinct'),
    ('train.lr=[1,', 'the value is not valid YAML'),
    ('stage=segmentation', 'train.batch_size: 1 in the segmentation stage'),
    ('data.min_gap=5', 'data.min_gap: 5 is larger than data.max_gap=3'),
])
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    config = os.path.join(REPO_ROOT, 'exp', 'spatial_correction_camvid', 'config.yaml')
    extra = ['train.batch_size=1'] if override.startswith('stage=') else []
    extra += ['data.max_gap=3'] if override.startswith('data.min_gap') else []
    with pytest.raises(UserError) as err:
        load_config(config, [override] + extra)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_every_key_of_the_schema_has_a_rule():
    from lib.utils.config import RULES

    def leaves(tree, prefix=''):
        for key, value in tree.items():
            yield from leaves(value, f'{prefix}{key}.') if isinstance(value, dict) else [f'{prefix}{key}']
    assert set(leaves(DEFAULTS)) == set(RULES)


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    # 8 levels of 10 aliases: 10^8 list items if it were expanded.
    lines = ['a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]']
    lines += [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * 10) + ']' for i in range(1, 9)]
    path = tmp_path / 'bomb.yaml'
    path.write_text('\n'.join(lines) + '\ntrain: {betas: *a8}\n')
    with pytest.raises(UserError, match=r'bomb\.yaml: not valid YAML \(aliases \(\*name\) are not allowed'):
        load_config(str(path))


@pytest.mark.parametrize('encoding', ['utf-16', 'latin-1'])
def test_a_config_that_is_not_utf8_is_one_line(tmp_path, encoding):
    path = tmp_path / 'config.yaml'
    path.write_bytes('# Légende: réglages\nseed: 1\n'.encode(encoding))
    with pytest.raises(UserError, match=r'config\.yaml: not UTF-8 text'):
        load_config(str(path))


def test_environment_variables_expand_as_in_bash(tmp_path, monkeypatch):
    path = write(tmp_path / 'config.yaml', {'train': {'save_root': '${MY_SAVE:-fallback}'},
                                            'eval': {'result_root': '${MY_RESULT}'}})
    monkeypatch.setenv('MY_RESULT', 'r')
    monkeypatch.setenv('MY_SAVE', '')  # set but empty: bash's ${VAR:-default} takes the default
    assert load_config(path)['train']['save_root'] == 'fallback'
    monkeypatch.delenv('MY_RESULT')
    with pytest.raises(UserError, match=r'eval\.result_root: expected a non-empty path'):
        load_config(path)


@pytest.fixture
def fake_python(tmp_path):
    """An interpreter stand-in that prints its command line and the folder it runs in, one argument per line."""
    script = tmp_path / 'fake_python'
    script.write_text('#!/usr/bin/env bash\npwd\nprintf "%s\\n" "$@"\n')
    script.chmod(0o755)
    return str(script)


def run_script(script, fake_python, **env):
    done = subprocess.run(['bash', script], env=dict(os.environ, PYTHON=fake_python, **env), capture_output=True,
                          text=True, timeout=60, cwd='/')
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_copied_experiment_folder_runs_its_own_config(tmp_path, fake_python):
    copy = os.path.join(REPO_ROOT, 'exp', f'_test_copy_{os.getpid()}')
    shutil.copytree(os.path.join(REPO_ROOT, 'exp', 'spatial_correction_cityscapes'), copy)
    try:
        cwd, *argv = run_script(os.path.join(copy, 'script', 'test_PDA.sh'), fake_python, GPUS='1', SAVE_ROOT='s')
        assert cwd == REPO_ROOT  # the checkpoint is the tool's to find (lib.eval.jobs.default_checkpoint)
        assert argv == ['tools/test_pda.py', os.path.join(copy, 'config.yaml')]
        assert load_config(os.path.join(copy, 'config.yaml'))['experiment'] == os.path.basename(copy)
        cwd, *argv = run_script(os.path.join(copy, 'script', 'train.sh'), fake_python, GPUS='1')
        assert argv == ['tools/train.py', os.path.join(copy, 'config.yaml')]
    finally:
        shutil.rmtree(copy)


def test_launch_runs_torchrun_of_the_same_interpreter_and_show_stays_one_process(fake_python):
    experiment = os.path.join(REPO_ROOT, 'exp', 'spatial_correction_cityscapes')
    _, *argv = run_script(os.path.join(experiment, 'script', 'train.sh'), fake_python, GPUS='2')
    assert argv[:3] == ['-m', 'torch.distributed.run', '--standalone'] and '--nproc_per_node=2' in argv
    for script in (os.path.join(experiment, 'script', 'show.sh'),
                   os.path.join(REPO_ROOT, 'exp', 'synthetic', 'script', 'show.sh')):
        cwd, *argv = run_script(script, fake_python, GPUS='4')
        assert cwd == REPO_ROOT and argv[0] == 'tools/show.py' and 'torch.distributed.run' not in argv


def setup_distribution(**environ):
    """setup.py's distribution object under ``environ`` (stopped after reading it: nothing is compiled)."""
    from distutils.core import run_setup

    import setuptools  # noqa: F401  (first: it provides distutils on Python >= 3.12)
    env = dict(os.environ)
    os.environ.update(environ)
    try:
        return run_setup(os.path.join(REPO_ROOT, 'setup.py'), stop_after='init')
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_setup_builds_the_cpu_label_kernels_where_a_compiler_is(tmp_path):
    if shutil.which(os.environ.get('CXX', 'c++')) is None:
        pytest.skip('no C++ compiler on PATH')
    (extension,) = setup_distribution(DAVSS_BUILD_CUDA='0', DAVSS_BUILD_CPU='auto').ext_modules
    assert extension.name == 'lib.ops._upsample_argmax_cpu'
    assert '-ffp-contract=off' in extension.extra_compile_args  # the kernels round as their reference does
    assert setup_distribution(DAVSS_BUILD_CUDA='0', DAVSS_BUILD_CPU='auto', CXX=str(tmp_path / 'no-cxx')).ext_modules \
        in (None, [])
    # run_setup swallows SystemExit: the refusals are checked on the command line, as pip would meet them.
    for environ, message in (({'DAVSS_BUILD_CPU': '1', 'CXX': str(tmp_path / 'no-cxx')},
                              'DAVSS_BUILD_CPU=1 but the CPU label kernels cannot be built: the C++ compiler'),
                             ({'DAVSS_BUILD_CPU': 'yes'}, 'DAVSS_BUILD_CPU must be auto, 0 or 1')):
        done = subprocess.run([sys.executable, 'setup.py', '--name'], cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**os.environ, 'DAVSS_BUILD_CUDA': '0', **environ})
        assert done.returncode != 0 and message in done.stderr


def test_every_tool_is_parse_args_and_main_and_imports_no_other_tool():
    import ast
    tools = sorted(glob.glob(os.path.join(REPO_ROOT, 'tools', '*.py')))
    names = {os.path.splitext(os.path.basename(p))[0] for p in tools}
    for path in tools:
        tree = ast.parse(open(path).read())
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert 'parse_args' in functions and 'main' in functions, path
        assert [a.arg for a in functions['main'].args.args] == ['args'], path
        imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or '').split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & (names | {'tools'}), (path, imported & names)
        assert 'sys.path' not in open(path).read(), path
