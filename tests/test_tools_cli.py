"""One command line: every tool that reads a config takes it as its first positional argument, ``--opts`` given
several times keeps every group in order (argparse's plain ``nargs`` keeps only the last one), and ``--threads``."""
import pytest
from helpers import load_tool

# Each tool with the least it needs to parse.
TOOLS = {
    'train': ['config.yaml'],
    'test_pda': ['config.yaml', '--checkpoint', 'model.pth'],
    'show': ['config.yaml', '--checkpoint', 'model.pth'],
    'demo': [],
    'check_dataset': ['config.yaml'],
    'eval_keyframe_policies': ['config.yaml', '--checkpoint', 'model.pth'],
    'infer_video': ['config.yaml', 'video.mp4', 'out', '--checkpoint', 'model.pth'],
    'export': ['config.yaml', '--checkpoint', 'model.pth', '--output', 'out'],
    'benchmark': ['config.yaml'],
}


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_config_first_repeated_opts_kept_and_threads(tool):
    args = load_tool(tool).parse_args(TOOLS[tool] + ['--opts', 'a.b=1', '--opts', 'c.d=2', 'e.f=3', '--threads', '3'])
    assert args.opts == ['a.b=1', 'c.d=2', 'e.f=3'] and args.threads == 3
    assert tool == 'demo' or args.config == 'config.yaml'  # the demo runs its own configs


@pytest.mark.parametrize('order', [0, 1])
def test_train_applies_both_groups(order, capsys):
    """Not just parsed: a bad key in either group reaches the config and stops the run with its name."""
    groups = [['--opts', 'train.max_iters=1'], ['--opts', 'train.no_such_key=1']]
    argv = ['exp/synthetic/segmentation.yaml'] + groups[order] + groups[1 - order]
    assert load_tool('train').run(argv) == 1
    err = capsys.readouterr().err
    assert 'unknown config key "train.no_such_key"' in err
