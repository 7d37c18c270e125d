"""Write DeepLab's full-frame masks of the training frames, for ``data.pseudo_labels: precomputed``.

    python tools/make_pseudo_labels.py exp/dmnet_cityscapes_release/config.yaml [--device cuda]

For every training list entry, frames t-(max_gap-1) .. t go through the config's DeepLab (``init.deeplab``, else
``init.pretrained``) as whole frames; the logits upsampled x4 (``model.align_corners``) and their argmax are written
as 8-bit PNGs under ``data.pseudo_label_root`` (docs/training.md). Run it again to continue: masks already written
are kept; a folder it did not make, or made from another DeepLab file or other settings, is refused.
"""
import argparse

import torch

from lib.dataset import pseudo_labels
from lib.dataset.build import list_path_of
from lib.dataset.frame_list import read_list
from lib.model.checkpoint import load_part, load_pretrained
from lib.model.checkpoint_info import sha256
from lib.model.scnet import build_scnet
from lib.utils import cli
from lib.utils.config import load_config, resolve_path
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arguments(parser)
    parser.add_argument('--device', default='auto', help='where DeepLab runs: auto (cuda when available) | cpu | cuda')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def main(args):
    cli.set_threads(args.threads)
    cfg = load_config(args.config, args.opts)
    data_cfg, model_cfg = cfg['data'], cfg['model']
    root = resolve_path(data_cfg['pseudo_label_root'])
    if root is None:
        raise UserError('data.pseudo_label_root: not set (where the masks go)')
    key = next((key for key in ('deeplab', 'pretrained') if cfg['init'][key]), None)  # init.deeplab first
    if key is None:
        raise UserError('init: the masks need DeepLab weights; set init.pretrained or init.deeplab')
    path = resolve_path(cfg['init'][key])
    net = build_scnet(model_cfg, 'dmnet')
    if key == 'deeplab':
        load_part(net.deeplab, 'deeplab', path, 'init.deeplab')
    else:
        load_pretrained(net, path, 'init.pretrained', required=['deeplab'])
    entries = read_list(list_path_of(data_cfg, 'train'), data_cfg['name'])
    frames = pseudo_labels.training_frames(entries, int(data_cfg['max_gap']))
    device = pick_device(args.device)
    net.to(device).eval()

    @torch.inference_mode()
    def segment(image):
        return net.segment(image.to(device))

    # What the masks depend on; a resumed run must match it.
    settings = {'deeplab_sha256': sha256(path), 'n_classes': model_cfg['n_classes'],
                'align_corners': model_cfg['align_corners'], 'pixel_scaling': data_cfg['pixel_scaling'],
                'deeplab': dict(model_cfg['deeplab'])}
    written = pseudo_labels.write_masks(root, resolve_path(data_cfg['root']), frames, segment, settings,
                                        data_cfg['pixel_scaling'], progress=not args.quiet)
    print(f'{root}: {written} masks written, {len(frames) - written} already there ({len(frames)} frames)')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
