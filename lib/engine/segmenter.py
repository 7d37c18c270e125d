"""VideoSegmenter: the Python API of video inference (what ``tools/infer_video.py`` does, callable on any stream).

    from lib import VideoSegmenter
    seg = VideoSegmenter.from_config('exp/synthetic/correction.yaml', 'saved_model/synthetic_correction/final.pth')
    for labels in seg(frames):          # frames: any iterable of RGB uint8 (H, W, 3) arrays, or float tensors
        ...                             # labels: uint8 (H, W) trainIds (int64 tensors for tensor frames)
    seg.run('drive.mp4', 'out/drive')   # segmentation video + summary.json, as the command line tool
"""
import dataclasses
import os
import time
import warnings

import numpy as np
import torch

from lib.engine.backend import build_segmenter, check_backend
from lib.engine.fast import EXACT, FastConfig
from lib.engine.keyframe import parse_policy
from lib.model import load_scnet
from lib.utils.atomic import write_json
from lib.utils.config import load_config
from lib.utils.distributed import pick_device
from lib.utils.output_lock import OutputLock
from lib.utils.palette import palette_for
from lib.utils.video_io import (FrameOutputs, OutputFolder, frame_to_tensor, labels_to_frame, open_frame_source,
                                pad_to_multiple)

CHANNEL_ORDERS = ('rgb', 'bgr')


def _fast_config(fast):
    """``fast``: False/None (exact), True (the default fast path), a FastConfig or a mapping of its fields."""
    if fast is None or fast is False:
        return None
    if fast is True:
        return FastConfig()
    if isinstance(fast, FastConfig):
        return None if fast == EXACT else fast
    if isinstance(fast, dict):
        return FastConfig.from_dict(fast)
    raise ValueError(f'VideoSegmenter: fast must be a bool, a FastConfig or a dict, got {type(fast).__name__}')


class VideoSegmenter:
    """Segments a stream frame by frame with SCNet: key frames by DeepLab, the others by propagation + correction.

    Args:
        net: an SCNet in eval mode (weights loaded) on ``device``.
        policy: key-frame policy, a string as ``--policy`` (``fixed:5``, ``distortion:0.3,max=10``, ``per-frame``).
        fast: False (exact path, the published numbers), True (``lib.engine.fast`` defaults), or a ``FastConfig``.
        backend: ``torch`` or ``onnxruntime`` (CPU; lib/engine/backend.py).
        size: None (run at the frame size) or (H, W) to resize frames for the model; outputs keep the frame size.
        channels: ``rgb`` or ``bgr`` (OpenCV's order) for numpy frames.
        threads: CPU threads of onnxruntime (torch's are the process's setting).
        palette: colours of ``run``'s overlays (default: Cityscapes).
    """

    def __init__(self, net, policy='fixed:5', fast=False, backend='torch', size=None, channels='rgb', threads=None,
                 palette=None):
        if channels not in CHANNEL_ORDERS:
            raise ValueError(f'VideoSegmenter: channels must be one of {CHANNEL_ORDERS}, got "{channels}"')
        self.net = net.eval()
        self.device = next(net.parameters()).device
        self.policy_text = policy
        self.fast = _fast_config(fast)
        self.backend = check_backend(backend)
        self.size = None if size is None else tuple(size)
        self.channels = channels
        self.palette = palette if palette is not None else palette_for('cityscapes')
        self.segmenter = build_segmenter(net, parse_policy(policy), backend, self.fast, threads)
        self.key_frames = []  # indices of the key frames of the last stream

    @classmethod
    def from_config(cls, config, checkpoint, policy='fixed:5', fast=False, backend='torch', device=None, opts=(),
                    **kwargs):
        """Build from an experiment YAML (path, or a config dict from ``lib.utils.config.load_config``) and a
        whole-SCNet checkpoint; ``device`` defaults to the config's (``auto`` picks CUDA when present)."""
        cfg = load_config(config, opts) if isinstance(config, (str, os.PathLike)) else config
        net = load_scnet(cfg['model'], checkpoint, pick_device(device or cfg.get('device', 'cpu')))
        kwargs.setdefault('palette', palette_for(cfg['data']['name']))
        return cls(net, policy=policy, fast=fast, backend=backend, **kwargs)

    def _to_model(self, frame):
        """A frame -> (model input (1, 3, H', W'), model size (h, w), frame size (H, W), numpy?)."""
        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f'VideoSegmenter: numpy frames must be uint8 (H, W, 3), got {frame.dtype} '
                                 f'{frame.shape}')
            rgb = frame[..., ::-1] if self.channels == 'bgr' else frame
            image, model_size = frame_to_tensor(rgb, self.size, device=self.device)
            return image, model_size, frame.shape[:2], True
        if torch.is_tensor(frame):
            x = frame.unsqueeze(0) if frame.dim() == 3 else frame
            if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point():
                raise ValueError(f'VideoSegmenter: tensor frames must be float (3, H, W) or (1, 3, H, W) RGB in '
                                 f'[0, 1], got {x.dtype} {tuple(frame.shape)}')
            x = x.to(self.device, torch.float32)
            if self.size is not None and tuple(self.size) != tuple(x.shape[-2:]):
                x = torch.nn.functional.interpolate(x, size=self.size, mode='bilinear', align_corners=False)
            image, model_size = pad_to_multiple(x)
            return image, model_size, tuple(frame.shape[-2:]), False
        raise ValueError(f'VideoSegmenter: a frame must be a numpy array or a torch tensor, got {type(frame).__name__}')

    def __call__(self, frames):
        """Segment a stream.

        Args:
            frames: any iterable of frames: numpy uint8 (H, W, 3) in ``channels`` order, or float tensors (3, H, W)
                / (1, 3, H, W) RGB in [0, 1].  All frames of a stream have one size.
        Yields:
            per frame, trainIds at the frame's size: numpy uint8 (H, W) for numpy frames, int64 tensors (H, W) on
            the model's device for tensor frames.  The policy restarts with each call (the first frame is a key
            frame); ``self.key_frames`` lists the key frames' indices.
        """
        self.segmenter.reset()
        self.key_frames = []
        first_size = None
        for index, frame in enumerate(frames):
            image, model_size, frame_size, is_numpy = self._to_model(frame)
            if first_size is None:
                first_size = frame_size
            elif tuple(frame_size) != tuple(first_size):
                raise ValueError(f'VideoSegmenter: frame {index} is {frame_size[1]}x{frame_size[0]} (WxH) but the '
                                 f'stream started at {first_size[1]}x{first_size[0]}')
            labels, is_key, _ = self.segmenter.step(image)  # (1, H', W') on the padded model grid
            if is_key:
                self.key_frames.append(index)
            if is_numpy:
                yield labels_to_frame(labels, model_size, frame_size)
            else:
                yield _labels_to_tensor(labels, model_size, frame_size)

    def run(self, path, out, overwrite=False, save_labels=False, save_overlay=False, video=True, fps=None):
        """Segment a video file or a frame folder into the folder ``out``, as ``tools/infer_video.py``.

        Writes ``segmentation.mp4`` (``.avi`` where mp4v cannot be written; with ``video``), ``labels/NNNNNN.png``
        (``save_labels``), ``overlay/NNNNNN.png`` (``save_overlay``) and ``summary.json``, into ``out.partial/``
        renamed to ``out`` when complete, under the tool's lock (``out.lock``); an existing ``out`` is replaced only
        with ``overwrite`` and only if an earlier run wrote it (``lib.engine.video.OutputFolder``).

        Returns:
            the summary dict (frames, key frames, seconds, frames per second).
        """
        source = open_frame_source(path)
        folder = OutputFolder(out, overwrite=overwrite, input_path=path)
        lock = OutputLock(folder.path, lock_path=folder.lock_path).acquire()
        try:
            folder = OutputFolder(out, overwrite=overwrite, input_path=path)  # again, under the lock
            folder.start()
            summary = self._write(source, folder, save_labels, save_overlay, video, fps)
            mismatch = source.count_mismatch()
            if mismatch:
                warnings.warn(mismatch)
            write_json(folder.file('summary.json'), summary, indent=2)
            folder.commit()
        finally:
            lock.release()
        return summary

    def _write(self, source, folder, save_labels, save_overlay, video, fps):
        channels, self.channels = self.channels, 'rgb'  # sources yield RGB
        writer = FrameOutputs(folder, fps or source.fps, self.palette, save_labels=save_labels,
                              save_overlay=save_overlay, video=video)
        start = time.perf_counter()
        try:
            for index, (frame, label) in enumerate(_paired(iter(source), self)):
                writer.write(index, frame, label)
        except BaseException:
            writer.abort()
            raise
        finally:
            self.channels = channels
        writer.close()  # checks that the video decodes to every frame written
        seconds = time.perf_counter() - start
        return {'input': source.path, 'policy': self.policy_text, 'backend': self.backend, 'frames': index + 1,
                'frames_announced': source.announced, 'key_frames': list(self.key_frames),
                'frame_size': list(frame.shape[:2]),
                'fast': None if self.fast is None else dataclasses.asdict(self.fast),
                'video': writer.video_name, 'seconds': round(seconds, 3),
                'frames_per_second': (index + 1) / seconds}


def _paired(frames, segmenter):
    """(frame, labels) pairs: each frame of ``frames`` with its labels from ``segmenter``, one at a time."""
    held = []

    def remember():
        for frame in frames:
            held.append(frame)
            yield frame

    for label in segmenter(remember()):
        yield held.pop(0), label


def _labels_to_tensor(labels, model_size, frame_size):
    """Labels (1, H', W') on the padded model grid -> int64 (H, W) at the frame size (crop, nearest resize)."""
    height, width = model_size
    label = labels[:, None, :height, :width].float()
    if (height, width) != tuple(frame_size):
        label = torch.nn.functional.interpolate(label, size=tuple(frame_size), mode='nearest')
    return label[0, 0].long()
