"""Train one stage of DAVSS from a config: ``python tools/train.py exp/<experiment>/config.yaml [--opts k=v ...]``.

Runs as one process (CPU or one GPU) or under torchrun (one process per GPU, several nodes); see
docs/training.md and ``exp/<experiment>/script/train.sh``.
"""
import argparse
import os
import sys

from lib.dataset import DatasetError
from lib.engine.checkpointing import CheckpointError
from lib.engine.train import NonFiniteLossError, main
from lib.utils import distributed
from lib.utils.config import ConfigError, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a DAVSS stage (segmentation | flow | dmnet | correction).')
    parser.add_argument('config', help='YAML config, e.g. exp/dmnet_cityscapes/config.yaml')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                        help='config overrides, e.g. train.max_iters=100 data.num_workers=2')
    parser.add_argument('--resume', action='store_true',
                        help='continue from <train.save_root>/<experiment>/now.pth exactly where it stopped')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic kernels (same as deterministic=true in the config)')
    return parser.parse_args(argv)


def default_experiment(config_path):
    """``exp/<name>/config.yaml`` -> ``<name>``; ``exp/<name>/<stage>.yaml`` -> ``<name>_<stage>``."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(config_path)))
    stem = os.path.splitext(os.path.basename(config_path))[0]
    return folder if stem == 'config' else f'{folder}_{stem}'


def run(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.opts)
        if not cfg['experiment']:
            cfg['experiment'] = default_experiment(args.config)
        main(cfg, resume=args.resume, deterministic=args.deterministic)
    except (ConfigError, CheckpointError, DatasetError, NonFiniteLossError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    finally:
        distributed.cleanup_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(run())
