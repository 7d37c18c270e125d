"""PDA evaluation of a trained SCNet: mIoU per key-frame distance, with the per-frame and propagation-only rows.

    python tools/test_pda.py exp/spatial_correction_cityscapes/config.yaml --checkpoint saved_model/.../best.pth
    torchrun --standalone --nproc_per_node=4 tools/test_pda.py CONFIG --checkpoint PATH   # clips sharded

Prints a table and writes ``<eval.result_root>/<experiment>/<checkpoint file stem>/pda.json`` and ``pda.md`` (so
``best.pth`` and a published file never overwrite each other's results); see docs/evaluation.md.  The resize
convention is ``eval.align_corners`` (each paper config sets what its dataset's original test script did) and TF32
is off unless ``eval.tf32``.  ``--save-predictions D`` also writes the DAVSS labels of distance D in the official
Cityscapes format (label-id PNGs, ``<out>/predictions_d<D>/<city>_<seq>_<frame>_pred_labelIds.png``) for
cityscapesscripts' evaluator or the benchmark server.
Everything that can be checked before the long run (config, checkpoint against the config, every frame of every
clip, the output folder) is checked first.  The result folder is locked while the run writes it; the previous
``pda.json`` / ``pda.md`` are renamed ``pda.previous.*`` until the new ones are written, and the table is printed
before the files are written (a full disk costs the files, not the numbers).
"""
import argparse
import json
import math
import os
import platform
import sys

import torch

from lib.dataset import DatasetError, build_dataset, build_eval_loader, check_class_count
from lib.engine import cityscapes_results
from lib.engine.pda import (PDAInputError, check_clip_files, check_distances, eval_model_cfg, evaluate_pda,
                            format_markdown, prepare_output_dir, protocol)
from lib.engine.result_dir import ResultFolderError, default_result_dir, drop_aside, lock_results, set_aside
from lib.utils import distributed
from lib.utils.atomic import write_text
from lib.model import load_scnet
from lib.utils.checkpoint import CheckpointError
from lib.utils.config import ConfigError, load_config
from lib.utils.errors import one_line
from lib.utils.palette import class_names
from lib.utils.precision import tf32

BAD_INPUT = (ConfigError, CheckpointError, DatasetError, PDAInputError, ResultFolderError)
RESULT_FILES = ('pda.json', 'pda.md')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='PDA evaluation: mIoU per distance between key and labelled frame.')
    parser.add_argument('config', help='YAML config, e.g. exp/spatial_correction_cityscapes/config.yaml')
    parser.add_argument('--checkpoint', required=True, help='a whole SCNet checkpoint (best.pth / final.pth)')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY=VALUE',
                        help='config overrides, e.g. model.align_corners=false eval.split=test')
    parser.add_argument('--max-clips', type=int, default=None, help='evaluate only the first N clips')
    parser.add_argument('--no-per-frame', action='store_true', help='skip the per-frame key network row')
    parser.add_argument('--no-propagation-only', action='store_true', help='skip the propagation-only row')
    parser.add_argument('--batched', action='store_true',
                        help='one network call over all distances: faster on GPU, may flip a few pixels')
    parser.add_argument('--output', default=None,
                        help='result folder (default <eval.result_root>/<experiment>/<checkpoint file stem>)')
    parser.add_argument('--save-predictions', type=int, default=None, metavar='D',
                        help='also write the labels of distance D as Cityscapes label-id PNGs (official format)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def prediction_dir(args, cfg, distances, out_dir):
    """The folder of ``--save-predictions D`` (None without it), after checking D and the label format."""
    if args.save_predictions is None:
        return None
    if args.save_predictions not in distances:
        raise PDAInputError(f'--save-predictions: distance {args.save_predictions} is not evaluated '
                            f'(eval.distances: {distances})')
    if cfg['data']['name'] not in cityscapes_results.FORMATS:
        raise PDAInputError(f'--save-predictions: writes Cityscapes label ids; data.name={cfg["data"]["name"]} '
                            f'has no such format (expected one of {", ".join(cityscapes_results.FORMATS)})')
    return os.path.join(out_dir, f'predictions_d{args.save_predictions}')


def json_safe(value):
    """NaN (the IoU of a class absent from labels and predictions) -> None, so that the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def setup(args):
    """Everything that can fail on bad input, before any clip is evaluated."""
    cfg = load_config(args.config, args.opts)
    check_class_count(cfg)
    model_cfg = eval_model_cfg(cfg)[0]
    if args.max_clips is not None and args.max_clips < 1:
        raise PDAInputError(f'--max-clips: expected a positive number, got {args.max_clips}')
    max_clips = args.max_clips if args.max_clips is not None else cfg['eval']['max_clips']
    distances = check_distances(cfg['eval']['distances'])
    out_dir = args.output or default_result_dir(cfg, args.checkpoint)
    # Every rank runs every check, so that bad input stops all of them (none is left waiting in a collective).
    predictions = prediction_dir(args, cfg, distances, out_dir)
    prepare_output_dir(out_dir)
    if predictions:
        prepare_output_dir(predictions)
    dataset = build_dataset(cfg['data'], cfg['eval']['split'], 'pda')
    check_clip_files(dataset, range(min(len(dataset), max_clips or len(dataset))))
    device = distributed.init_distributed(cfg['device'])
    model = load_scnet(model_cfg, args.checkpoint, device)
    loader = build_eval_loader(dataset, cfg['eval']['batch_size'], cfg['data']['num_workers'], max_items=max_clips,
                               pin_memory=cfg['data']['pin_memory'])
    return cfg, distances, out_dir, device, model, loader, predictions


def prediction_writer(dataset, folder, distance):
    """``on_predictions`` of :func:`evaluate_pda`: the DAVSS labels of ``distance`` as Cityscapes PNGs."""
    def write(clip_indices, preds):
        for row, index in enumerate(clip_indices):
            cityscapes_results.save_prediction(folder, dataset.frames[index].image, preds['davss'][distance][row])
    return write


def report(result, cfg, args, out_dir):
    """Table on stdout, ``pda.json`` and ``pda.md`` in ``out_dir``."""
    names = class_names(cfg['data']['name'])
    table = format_markdown(result, names)
    p = protocol(*eval_model_cfg(cfg), args.batched, cfg['eval']['tf32'])
    meta = {'config': args.config, 'checkpoint': args.checkpoint, 'split': cfg['eval']['split'],
            'align_corners': p['align_corners'], 'protocol': p, 'batched': args.batched,
            'world_size': distributed.get_world_size(), 'torch': torch.__version__,
            'python': platform.python_version(), 'class_names': list(names)}
    text = json.dumps(json_safe({**meta, **result}), indent=1, allow_nan=False)
    print(table, end='', flush=True)  # first: the numbers survive a failed write
    write_text(os.path.join(out_dir, 'pda.json'), text + '\n')
    header = (f'# PDA: {cfg["experiment"]}\n\nsplit {cfg["eval"]["split"]}, '
              f'{result["n_clips"]} clips, checkpoint {args.checkpoint}\n\n'
              f'protocol: align_corners={p["align_corners"]} (from {p["align_corners_from"]}), tf32={p["tf32"]}, '
              f'batched={p["batched"]}; {p["flow"]}; resizes {p["resizes"]}; {p["merge"]}\n\n')
    write_text(os.path.join(out_dir, 'pda.md'), header + table)
    print(f'{result["n_clips"]} clips in {result["seconds"]:.1f} s; wrote {out_dir}/pda.json and pda.md')
    if args.save_predictions is not None:
        print(f'label-id PNGs of distance {args.save_predictions}: {out_dir}/predictions_d{args.save_predictions}/')


def run(argv=None):
    args = parse_args(argv)
    lock = None
    try:
        cfg, distances, out_dir, device, model, loader, predictions = setup(args)
        lock = lock_results(out_dir)
        previous = set_aside(out_dir, RESULT_FILES) if distributed.is_main_process() else []
        writer = prediction_writer(loader.dataset, predictions, args.save_predictions) if predictions else None
        with tf32(cfg['eval']['tf32']):
            result = evaluate_pda(model, loader, cfg['model']['n_classes'], distances=distances, device=device,
                                  per_frame=cfg['eval']['per_frame'] and not args.no_per_frame,
                                  propagation_only=cfg['eval']['propagation_only'] and not args.no_propagation_only,
                                  progress=not args.no_progress, batched=args.batched, on_predictions=writer)
        if distributed.is_main_process():
            report(result, cfg, args, out_dir)
            drop_aside(previous)
    except BAD_INPUT + (OSError,) as err:
        print(f'error: {one_line(err)}', file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
        distributed.cleanup_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(run())
