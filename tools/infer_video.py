"""Segment a real video with a trained SCNet: key frames through DeepLab, the rest by distortion-aware propagation.

    python3 tools/infer_video.py --config exp/spatial_correction_cityscapes/config.yaml \\
        --checkpoint saved_model/spatial_correction_cityscapes/best.pth input.mp4 out/drive --policy fixed:5

INPUT is a video file (anything OpenCV reads) or a folder of frames (image files in natural name order).  OUTPUT is a
folder that receives ``segmentation.mp4`` (colour overlay video; ``.avi`` when this OpenCV cannot write mp4v) and,
on request, ``labels/NNNNNN.png`` (trainIds), ``overlay/NNNNNN.png`` and always ``summary.json``.  It is written as
``OUTPUT.partial/`` and renamed when complete; every write is checked (the video must decode to every frame).
``--overwrite`` replaces only an earlier output of this tool, and ``OUTPUT.lock`` keeps a second run out while one
writes.  See docs/inference.md.
"""
import argparse
import dataclasses
import os
import sys
import time

from tqdm import tqdm

from lib.engine.backend import BACKENDS, build_segmenter, check_backend
from lib.engine.fast import add_fast_arguments, config_from_args
from lib.engine.keyframe import PolicyError, parse_policy
from lib.engine.video import set_threads
from lib.model import load_scnet
from lib.utils.atomic import write_json
from lib.utils.config import ConfigError, load_config
from lib.utils.distributed import pick_device
from lib.utils.output_lock import OutputLock, OutputLockError
from lib.utils.palette import palette_for
from lib.utils.video_io import (FrameOutputs, OutputFolder, VideoIOError, frame_to_tensor, labels_to_frame,
                                open_frame_source)

PROG = 'infer_video'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('input', help='video file or folder of frames')
    parser.add_argument('output', help='output folder (must not exist unless --overwrite)')
    parser.add_argument('--config', required=True, help='experiment YAML (its model: section builds the network)')
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--policy', default='fixed:5',
                        help='key-frame policy: fixed:K | distortion:TAU[,max=N][,stat=mean|area|pNN] | per-frame '
                             '(default fixed:5)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='run the model at this size (default: the frame size); outputs keep the frame size')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace OUTPUT if an earlier infer_video run wrote it (any other folder is refused)')
    parser.add_argument('--save-labels', action='store_true', help='write labels/NNNNNN.png (trainIds, 255 = ignore)')
    parser.add_argument('--save-overlay', action='store_true', help='write overlay/NNNNNN.png (colour overlays)')
    parser.add_argument('--video', action='store_true',
                        help='write the overlay video (the default when no --save-* option is given)')
    parser.add_argument('--fps', type=float, default=None,
                        help='frame rate of the output video (default: the input video\'s, 25 for a frame folder)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads for torch (default: torch\'s choice; 1 is much faster on a shared, '
                             'oversubscribed CPU)')
    parser.add_argument('--device', default=None, help='cpu | cuda (default: the config\'s device)')
    parser.add_argument('--backend', choices=BACKENDS, default='torch',
                        help='torch (default) or onnxruntime (CPU; the two steps exported at the frame size on the '
                             'first frame, fp32; docs/inference.md)')
    parser.add_argument('--opts', nargs='*', action='extend', default=[], help='config overrides key.sub=value')
    add_fast_arguments(parser)
    args = parser.parse_args(argv)
    if args.fps is not None and not args.fps > 0:
        parser.error(f'--fps {args.fps}: expected a positive frame rate')
    if args.size is not None and min(args.size) < 4:
        parser.error(f'--size {args.size[0]} {args.size[1]}: expected a height and width of at least 4 pixels')
    if not (args.save_labels or args.save_overlay):
        args.video = True
    return args


def segment_video(model, source, policy, folder, args, palette, device):
    """Stream ``source`` through the model, writing each frame's outputs; returns the run's summary dict."""
    fast = config_from_args(args)
    segmenter = build_segmenter(model, policy, args.backend, fast, args.threads)
    writers = FrameOutputs(folder, args.fps or source.fps, palette, save_labels=args.save_labels,
                           save_overlay=args.save_overlay, video=args.video)
    keys = []
    start, start_cpu = time.perf_counter(), time.process_time()
    progress = tqdm(source, total=source.count, unit='frame', desc=PROG, dynamic_ncols=True)
    try:
        for index, frame in enumerate(progress):
            frame_size = frame.shape[:2]
            image, model_size = frame_to_tensor(frame, args.size, device=device)  # (1, 3, H', W')
            labels, is_key, _ = segmenter.step(image)
            if is_key:
                keys.append(index)
            writers.write(index, frame, labels_to_frame(labels, model_size, frame_size))
    except BaseException:
        writers.abort()
        raise
    finally:
        progress.close()
    writers.close()  # checks that the video decodes to every frame written
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - start_cpu  # on a shared machine the fairer speed measure
    n_frames = index + 1
    return {'input': args.input, 'policy': policy.name, 'frames': n_frames,
            'frames_announced': source.announced, 'frames_decoded': n_frames, 'key_frames': keys,
            'frame_size': list(frame_size), 'model_size': list(model_size),
            'fast': None if fast is None else dataclasses.asdict(fast), 'backend': args.backend,
            'video': writers.video_name,
            'seconds': round(seconds, 3), 'cpu_seconds': round(cpu_seconds, 3), 'frames_per_second': n_frames / seconds}


def main(args):
    folder = None
    lock = None
    try:
        policy = parse_policy(args.policy)
        check_backend(args.backend)
        source = open_frame_source(args.input)
        folder = OutputFolder(args.output, overwrite=args.overwrite, input_path=args.input)
        cfg = load_config(args.config, args.opts)
        set_threads(args.threads)
        device = pick_device(args.device or cfg['device'])
        model = load_scnet(cfg['model'], args.checkpoint, device)
        palette = palette_for(cfg['data']['name'])
        lock = OutputLock(folder.path, lock_path=folder.lock_path).acquire()
        folder = OutputFolder(args.output, overwrite=args.overwrite, input_path=args.input)  # again, under the lock
        folder.start()
        summary = segment_video(model, source, policy, folder, args, palette, device)
        mismatch = source.count_mismatch()
        if mismatch:
            print(f'warning: {mismatch}', file=sys.stderr)
        write_json(folder.file('summary.json'), summary, indent=2)
        folder.commit()
    except (VideoIOError, PolicyError, ConfigError, ValueError, OSError, OutputLockError) as err:
        print(f'error: {err}', file=sys.stderr)
        if folder is not None and folder.started and os.path.isdir(folder.partial):
            print(f'the incomplete output is left in {folder.partial}', file=sys.stderr)
        return 1
    finally:
        if lock is not None:
            lock.release()
    print(f'{PROG}: {summary["frames"]} frames ({len(summary["key_frames"])} key frames, {summary["policy"]}) at '
          f'{summary["frames_per_second"]:.2f} frames/s -> {folder.path}')
    return 0


if __name__ == '__main__':
    sys.exit(main(parse_args()))
