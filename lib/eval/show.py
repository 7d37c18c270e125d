"""Pictures of the propagation of chosen clips into a result folder (``tools/show.py`` is its command line; see it
for the pictures; ``tools/demo.py`` runs it in process).  The tiles and grids are :mod:`lib.utils.visualize`'s."""
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from lib.dataset import build_dataset
from lib.dataset.checks import check_clip_files
from lib.eval.jobs import default_result_dir
from lib.eval.pda import check_distances
from lib.model import load_scnet
from lib.utils import visualize as vis
from lib.utils.atomic import write_png
from lib.utils.config import load_config
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError
from lib.utils.outputs import StagedFolder
from lib.utils.palette import class_names, palette_for
from lib.utils.runtime import tf32


@dataclass
class ShowRun:
    """What to draw (the options of ``tools/show.py``)."""
    config: str
    checkpoint: str
    opts: Sequence[str] = ()
    clips: Optional[Sequence[int]] = None  # None: eval.show_clips
    distance: int = 9
    tile_width: int = 256
    frame_ms: int = 400
    output: Optional[str] = None  # None: <eval.result_root>/<experiment>/<checkpoint file stem>/show


def run_show(run):
    """Draw ``run`` (a :class:`ShowRun`); returns the folder.  Bad input raises :class:`UserError` before anything
    is written; the pictures are staged (``<folder>.partial/``) and appear together."""
    cfg = load_config(run.config, run.opts)
    out_dir = run.output or os.path.join(default_result_dir(cfg, run.checkpoint), 'show')
    dataset = build_dataset(cfg['data'], cfg['eval']['split'], 'pda')
    clips = list(run.clips) if run.clips is not None else list(cfg['eval']['show_clips'])
    bad = [c for c in clips if not 0 <= c < len(dataset)]
    if bad:
        raise UserError(f'clips {bad}: the {cfg["eval"]["split"]} split has {len(dataset)} clips (0..'
                        f'{len(dataset) - 1})')
    check_distances([run.distance])
    check_clip_files(dataset, clips)
    device = pick_device(cfg['device'])
    model = load_scnet(cfg['model'], run.checkpoint, device)
    with StagedFolder(out_dir, 'pictures', '--output', overwrite=True) as folder:
        palette = palette_for(cfg['data']['name'])
        tiles = vis.TileMaker(palette, run.tile_width)
        write_png(folder.file('legend.png'), vis.legend(palette, class_names(cfg['data']['name'])))
        for index in clips:
            frames, label = dataset[index]
            with tf32(cfg['eval']['tf32']):  # plain fp32 by default, as the evaluation
                trace = trace_clip(model, frames[None].to(device), run.distance)
            picture, animation = vis.clip_pictures(trace, frames, label, tiles)
            stem = f'clip{index}_d{run.distance}'
            write_png(folder.file(f'{stem}.png'), picture)
            vis.save_gif(animation, folder.file(f'{stem}.gif'), duration_ms=run.frame_ms)
        folder.commit()
    print(f'wrote the grids and GIFs of clips {clips} and legend.png to {out_dir}')
    return out_dir


@torch.no_grad()
def trace_clip(model, frames, distance):
    """Every step of one propagation from key frame ``t - distance`` to ``t``, for visualisation: the original show
    script's corrected predictions, plus the propagated ones and the distortion maps.

    Args:
        model: an ``SCNet`` in eval mode; frames: (N, T, 3, H, W) clips on its device; distance: 1 .. T-1.
    Returns:
        dict with ``'frames'`` (list of frame indices into the clip, key first), ``'merged'`` and ``'propagated'``
        (lists of (N, H, W) int64, the key frame's prediction first), ``'distortion'`` (list of (N, H, W) float in
        [0, 1], None for the key frame) and ``'per_frame'`` ((N, H, W) int64, the key network on the last frame).
    """
    last = frames.shape[1] - 1
    key = last - distance
    state = model.key_frame(frames[:, key])
    key_pred = model.to_full_resolution(state.logits).argmax(1)
    trace = {'frames': [key], 'merged': [key_pred], 'propagated': [key_pred], 'distortion': [None]}
    for j in range(key, last):
        state = model.propagate(state, model.estimate_flow(frames[:, j + 1], frames[:, j]))
        out = model.correct(state, frames[:, j + 1], full_resolution=True)
        trace['frames'].append(j + 1)
        trace['merged'].append(out['merged'].argmax(1))
        trace['propagated'].append(out['propagated'].argmax(1))
        trace['distortion'].append(out['distortion'][:, 0])
    trace['per_frame'] = model.segment(frames[:, last])
    return trace
