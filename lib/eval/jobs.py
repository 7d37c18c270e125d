"""A PDA evaluation of one checkpoint into its locked result folder (``tools/test_pda.py`` is its command line):
every input checked first, then the table on stdout (a full disk costs the files, not the numbers), ``pda.json``,
``pda.md`` and ``pda.png``; the previous ``pda.*`` are set aside as ``pda.previous.*`` until the new ones are written.
"""
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from lib.dataset import build_dataset, build_eval_loader
from lib.dataset.checks import check_clip_files
from lib.eval.pda import check_distances, eval_conventions, evaluate_pda, format_markdown, protocol
from lib.model import load_scnet
from lib.utils import distributed
from lib.utils.atomic import write_png, write_text
from lib.utils.config import load_config, resolve_path
from lib.utils.errors import UserError
from lib.utils.outputs import OwnedFolder, StagedFolder
from lib.utils.palette import class_names, train_ids_to_label_ids
from lib.utils.runtime import tf32
from lib.utils.visualize import plot_pda

RESULT_FILES = ('pda.json', 'pda.md', 'pda.png')


@dataclass
class PDARun:
    """What to evaluate (the options of ``tools/test_pda.py``)."""
    config: str
    checkpoint: str
    opts: Sequence[str] = field(default_factory=list)
    max_clips: Optional[int] = None  # None: eval.max_clips
    per_frame: bool = True  # with eval.per_frame: the key network on frame t (upper bound row)
    propagation_only: bool = True  # with eval.propagation_only: the row without correction
    batched: bool = False
    output: Optional[str] = None  # None: <eval.result_root>/<experiment>/<checkpoint file stem>
    save_predictions: Optional[int] = None  # a distance whose labels go out as Cityscapes label-id PNGs
    progress: bool = True


def prediction_dir(run, cfg, distances, out_dir):
    """The folder of ``--save-predictions D`` (None without it), after checking D and the label format."""
    if run.save_predictions is None:
        return None
    if run.save_predictions not in distances:
        raise UserError(f'--save-predictions: distance {run.save_predictions} is not evaluated '
                        f'(eval.distances: {distances})')
    if cfg['data']['name'] not in FORMATS:
        raise UserError(f'--save-predictions: writes Cityscapes label ids; data.name={cfg["data"]["name"]} '
                        f'has no such format (expected one of {", ".join(FORMATS)})')
    return os.path.join(out_dir, f'predictions_d{run.save_predictions}')


def json_safe(value):
    """NaN (the IoU of a class absent from labels and predictions) -> None, so that the file is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def setup(run):
    """Everything that can fail on bad input, before any clip is evaluated."""
    cfg = load_config(run.config, run.opts)
    model_cfg = dict(cfg['model'], align_corners=eval_conventions(cfg)[0])  # the headline convention's network
    max_clips = run.max_clips or cfg['eval']['max_clips']  # --max-clips is a positive integer
    distances = check_distances(cfg['eval']['distances'])
    out_dir = run.output or default_result_dir(cfg, run.checkpoint)
    # Every rank runs every check, so that bad input stops all of them (none is left waiting in a collective).
    predictions = prediction_dir(run, cfg, distances, out_dir)
    dataset = build_dataset(cfg['data'], cfg['eval']['split'], 'pda')
    check_clip_files(dataset, range(min(len(dataset), max_clips or len(dataset))))
    device = distributed.init_distributed(cfg['device'])
    model = load_scnet(model_cfg, run.checkpoint, device)
    loader = build_eval_loader(dataset, cfg['eval']['batch_size'], cfg['data']['num_workers'], max_items=max_clips,
                               pin_memory=cfg['data']['pin_memory'])
    return cfg, distances, out_dir, device, model, loader, predictions


def prediction_writer(dataset, folder, distance):
    """``on_predictions`` of :func:`evaluate_pda`: the DAVSS labels of ``distance`` as Cityscapes label-id PNGs (the
    ignore index is never predicted)."""
    def write(clip_indices, preds):
        for row, index in enumerate(clip_indices):
            train_ids = preds['davss'][distance][row].cpu().numpy()
            write_png(os.path.join(folder, prediction_name(dataset.frames[index].image)),
                      train_ids_to_label_ids(train_ids))
    return write


def report(result, cfg, run, out_dir):
    """Table on stdout, ``pda.json``, ``pda.md`` and ``pda.png`` in ``out_dir``: every convention, headline first."""
    names = class_names(cfg['data']['name'])
    p = protocol(cfg, result['align_corners'], run.batched)
    others = [dict(entry, protocol=protocol(cfg, entry['align_corners'], run.batched))
              for entry in result['other_protocols']]
    table = format_markdown(result, names)
    for entry in others:
        q = entry['protocol']
        table += (f'\n## Also: align_corners={q["align_corners"]} ({q["source"]})\n\n'
                  + format_markdown(dict(entry, distances=result['distances']), names))
    meta = {'config': run.config, 'checkpoint': run.checkpoint, 'split': cfg['eval']['split'], 'protocol': p,
            'batched': run.batched, 'world_size': distributed.get_world_size(), 'torch': torch.__version__,
            'python': platform.python_version(), 'class_names': list(names)}
    text = json.dumps(json_safe({**meta, **result, 'other_protocols': others}), indent=1, allow_nan=False)
    table = (f'protocol: align_corners={p["align_corners"]} ({p["source"]}), tf32={p["tf32"]}, '
             f'batched={p["batched"]}; {p["flow"]}; resizes {p["resizes"]}; {p["merge"]}\n\n') + table
    print(table, end='', flush=True)  # first: the numbers survive a failed write
    write_text(os.path.join(out_dir, 'pda.json'), text + '\n')
    write_text(os.path.join(out_dir, 'pda.md'), f'# PDA: {cfg["experiment"]}\n\nsplit {cfg["eval"]["split"]}, '
               f'{result["n_clips"]} clips, checkpoint {run.checkpoint}\n\n' + table)
    plot_pda(json_safe(result), os.path.join(out_dir, 'pda.png'),
             f'PDA: {cfg["experiment"]}, {os.path.basename(run.checkpoint)}, {cfg["eval"]["split"]} split '
             f'({result["n_clips"]} clips)')
    print(f'{result["n_clips"]} clips in {result["seconds"]:.1f} s; wrote {out_dir}/pda.json, pda.md and pda.png')
    if run.save_predictions is not None:
        print(f'label-id PNGs of distance {run.save_predictions}: {out_dir}/predictions_d{run.save_predictions}/')


def run_pda(run):
    """Evaluate ``run`` (a :class:`PDARun`); returns the result folder.  Bad input raises :class:`UserError`
    before anything is written.  The predictions of ``--save-predictions`` are staged and appear whole."""
    cfg, distances, out_dir, device, model, loader, predictions = setup(run)
    folder = claim_results(out_dir, RESULT_FILES)
    staged = None
    try:
        if predictions and distributed.is_main_process():
            staged = StagedFolder(predictions, 'predictions', '--save-predictions', overwrite=True, locked=False)
            staged.start()
        distributed.barrier()  # the partial folder exists before any rank writes into it
        writer = prediction_writer(loader.dataset, predictions + '.partial', run.save_predictions) \
            if predictions else None
        with tf32(cfg['eval']['tf32']):
            result = evaluate_pda(model, loader, cfg['model']['n_classes'], distances=distances, device=device,
                                  per_frame=cfg['eval']['per_frame'] and run.per_frame,
                                  propagation_only=cfg['eval']['propagation_only'] and run.propagation_only,
                                  progress=run.progress, batched=run.batched, on_predictions=writer,
                                  conventions=eval_conventions(cfg))
        if distributed.is_main_process():
            report(result, cfg, run, out_dir)
            if staged is not None:
                staged.commit()
            folder.drop_aside()
    finally:
        if folder is not None:
            folder.release()
    return out_dir


KIND = 'evaluation results'


def default_checkpoint(cfg):
    """What ``tools/test_pda.py`` and ``tools/show.py`` load without ``--checkpoint``: the config's own training's
    ``<train.save_root>/<experiment>/best.pth`` (as the original's tests), or ``final.pth`` if it never validates."""
    name = 'best.pth' if cfg['train']['val_every'] > 0 else 'final.pth'
    return os.path.join(resolve_path(cfg['train']['save_root']), cfg['experiment'], name)


def add_checkpoint_argument(parser):
    """``--checkpoint`` of ``tools/test_pda.py`` and ``tools/show.py``; :func:`checkpoint_of` resolves it."""
    parser.add_argument('--checkpoint', default=None, help='a whole SCNet checkpoint (default: what the config '
                        'trained, <train.save_root>/<experiment>/best.pth, or final.pth when train.val_every is 0)')


def checkpoint_of(args):
    """``--checkpoint``, else :func:`default_checkpoint` of the tool's config and ``--opts``."""
    return args.checkpoint or default_checkpoint(load_config(args.config, args.opts))


def default_result_dir(cfg, checkpoint):
    """``<eval.result_root>/<experiment>/<checkpoint file stem>``: the results of each checkpoint stay apart."""
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(resolve_path(cfg['eval']['result_root']), cfg['experiment'], stem)


def claim_results(path, files):
    """Rank 0 claims ``path`` (its ``files`` set aside) and gets the :class:`OwnedFolder`, the others None; all learn
    of a refusal."""
    def claim():
        folder = OwnedFolder(path, KIND, '--output', own_files=files).claim()
        folder.set_aside(files)
        return folder
    return distributed.claimed_on_main(claim)


FORMATS = ('cityscapes', 'synthetic')  # the datasets labelled in Cityscapes train ids
_FRAME_NAME = re.compile(r'^(?P<prefix>[^_/]+_\d{6}_\d{6})_leftImg8bit\.png$')


def prediction_name(frame_path):
    """``leftImg8bit_sequence/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png`` ->
    ``frankfurt_000000_000294_pred_labelIds.png``."""
    match = _FRAME_NAME.match(os.path.basename(frame_path))
    if match is None:
        raise UserError(f'{frame_path}: not a Cityscapes frame name (<city>_<seq>_<frame>_leftImg8bit.png)')
    return f'{match["prefix"]}_pred_labelIds.png'
