"""What is this checkpoint?  Check a download (or a run's output) before a long job.

    python tools/inspect_checkpoint.py saved_model/pretrained/spatial_correction_cityscapes.pth
    python tools/inspect_checkpoint.py FILE --config exp/synthetic/correction.yaml   # compare with its widths

Prints the format, sha256, networks and how their tensors fit the project's by name and shape, the class count, and
which config key or command uses the file (lib/model/checkpoint_info.py).  Exit status 1 when it does not fit.
"""
import argparse
import json

from lib.model.checkpoint_info import describe, format_text
from lib.utils import cli
from lib.utils.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Describe a DAVSS checkpoint file.')
    parser.add_argument('checkpoint', help='a .pth file')
    parser.add_argument('--config', help='compare with the networks of this config (default: the config a training '
                                          'checkpoint carries, else the published networks)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of text')
    return parser.parse_args(argv)


def main(args):
    model_cfg = load_config(args.config)['model'] if args.config else None
    info = describe(args.checkpoint, model_cfg)
    print(json.dumps(info, indent=1) if args.json else format_text(info))
    return 0 if info['layout_match'] and not info['non_finite'] else 1


if __name__ == '__main__':
    cli.run(main, parse_args())
