"""Writing the synthetic set: snippets rendered in parallel into a staged folder in the Cityscapes layout."""
import io
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from lib.dataset import synthetic_layout as layout
from lib.dataset.frame_list import format_line
from lib.synthetic.scene import (DIFFICULTIES, USED_CLASSES, Difficulty, Street, _seeded_rng, flow_validity,
                                 sensor_image, snippet_name)
from lib.utils.atomic import atomic_path, write_json, write_png, write_text
from lib.utils.errors import UserError
from lib.utils.outputs import StagedFolder
from lib.utils.palette import train_ids_to_label_ids


@dataclass(frozen=True)
class SnippetJob:
    root: str
    split: str
    index: int
    height: int
    width: int
    n_frames: int
    labelled_frame: int
    seed: int
    difficulty: Difficulty


def write_npz(path, **arrays):
    """``np.savez_compressed`` without the time of writing in the zip headers: same arrays, same bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, 'w') as archive:
        for name, array in arrays.items():
            npy = io.BytesIO()
            np.save(npy, array)
            archive.writestr(zipfile.ZipInfo(f'{name}.npy'), npy.getvalue(), zipfile.ZIP_DEFLATED)


def render_snippet(job):
    """Render and write one snippet; returns its list line."""
    street = Street(_seeded_rng(job.seed, job.split, job.index, 0), job.height, job.width, job.n_frames,
                    job.difficulty)
    noise_rng = _seeded_rng(job.seed, job.split, job.index, 1)
    city, seq = snippet_name(job.split, job.index)
    previous_surface = None
    for frame in range(job.n_frames):
        rgb, label, surface, flow = street.render(frame)
        image_rel = layout.frame_path(job.split, city, seq, frame)
        frame_bgr = sensor_image(rgb, street.lighting(frame), job.difficulty.noise, noise_rng)
        write_png(os.path.join(job.root, image_rel), frame_bgr, order='BGR')
        write_png(os.path.join(job.root, layout.sequence_label_path(image_rel)), label)
        if frame == job.labelled_frame:
            write_png(os.path.join(job.root, layout.label_path(job.split, city, seq, frame)), label)
            write_png(os.path.join(job.root, layout.label_ids_path(job.split, city, seq, frame)),
                      train_ids_to_label_ids(label))
        if previous_surface is not None:
            valid = flow_validity(flow, surface, previous_surface)
            write_npz(os.path.join(job.root, layout.flow_path(image_rel)), flow=flow.astype(np.float16), valid=valid)
        previous_surface = surface
    return format_line(layout.frame_path(job.split, city, seq, job.labelled_frame),
                       layout.label_path(job.split, city, seq, job.labelled_frame))


KIND = 'synthetic set'
MAX_SIDE = 4096  # the renderer holds a few float maps of the frame: 4096 x 4096 already takes gigabytes


def generate(root, size=(128, 256), n_train=24, n_val=8, n_test=0, seed=0, difficulty='medium', n_frames=30,
             labelled_frame=19, workers=None, progress=False):
    """Write a synthetic Cityscapes-layout set of ``size`` (H, W) frames under ``root`` (a new or empty folder, or a
    set the generator made, replaced) and return its metadata.  The set is a function of ``seed`` and the options
    (one random stream per snippet, whatever ``workers``); ``difficulty``: a name of :data:`DIFFICULTIES` or a
    :class:`Difficulty`; ``labelled_frame`` (the one ``gtFine/`` and the lists name) must leave a PDA clip's 10 frames.
    """
    height, width = (int(s) for s in size)
    if height % 4 or width % 4 or not 16 <= min(height, width) <= max(height, width) <= MAX_SIDE:
        raise UserError(f'size: expected H and W multiples of 4 between 16 and {MAX_SIDE}, got {height}x{width}')
    if not 9 <= labelled_frame < n_frames:
        raise UserError(f'labelled_frame: expected 9 <= labelled_frame < n_frames={n_frames}, got {labelled_frame}')
    counts = {'train': int(n_train), 'val': int(n_val), 'test': int(n_test)}
    for split, count in counts.items():
        if count < 0:
            raise UserError(f'{split} snippets: expected a count >= 0, got {count}')
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise UserError(f'difficulty: expected one of {sorted(DIFFICULTIES)}, got "{difficulty}"')
        difficulty_name, difficulty = difficulty, DIFFICULTIES[difficulty]
    else:
        difficulty_name = 'custom'
    with StagedFolder(root, KIND, 'synthetic root', overwrite=True) as folder:
        jobs = [SnippetJob(folder.partial, split, index, height, width, n_frames, labelled_frame, seed, difficulty)
                for split, count in counts.items() for index in range(count)]
        workers = workers or min(os.cpu_count() or 1, 8)
        bar = dict(total=len(jobs), desc='synthetic snippets', disable=not progress)
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                lines = list(tqdm(pool.map(render_snippet, jobs), **bar))
        else:
            lines = [render_snippet(job) for job in tqdm(jobs, **bar)]
        for split in counts:
            split_lines = [line for job, line in zip(jobs, lines) if job.split == split]
            if split_lines:
                write_text(os.path.join(folder.partial, 'list', f'{split}.txt'), ''.join(split_lines))
        meta = {'generator': 'lib.synthetic.scene', 'version': 1, 'size': [height, width], 'n_frames': n_frames,
                'labelled_frame': labelled_frame, 'seed': seed, 'difficulty': difficulty_name,
                'difficulty_params': asdict(difficulty), 'snippets': counts, 'classes': list(USED_CLASSES)}
        write_json(os.path.join(folder.partial, layout.META_FILE), meta)
        folder.commit()
    return meta
