"""VideoSegmenter: video inference as a Python API; ``tools/infer_video.py`` is its command line.

    from lib import VideoSegmenter
    seg = VideoSegmenter.from_config('exp/synthetic/correction.yaml', 'saved_model/synthetic_correction/final.pth')
    for labels in seg(frames):          # frames: any iterable of RGB uint8 (H, W, 3) arrays, or float tensors
        ...                             # labels: uint8 (H, W) trainIds (int64 tensors for tensor frames)
    labels = seg.step(frame)            # one frame at a time; seg.reset() starts a new stream
    seg.run('drive.mp4', 'out/drive')   # segmentation video + summary.json, as the command line tool
    seg.run(0, 'out/camera')            # a camera (or a stream URL) until it ends or Ctrl-C
"""
import dataclasses
import os
import signal
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lib.infer.backends import build_segmenter, check_backend
from lib.infer.fast import EXACT, FastConfig
from lib.infer.keyframe_policy import FixedInterval, parse_policy
from lib.infer.video_io import FrameOutputs, labels_to_frame, open_frame_source, pad_to_multiple
from lib.model import load_scnet
from lib.utils import profiling
from lib.utils.atomic import write_json
from lib.utils.config import load_config
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError
from lib.utils.outputs import StagedFolder
from lib.utils.palette import class_names, palette_for

CHANNEL_ORDERS = ('rgb', 'bgr')
KIND = 'video segmentation'


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
    raise UserError(f'VideoSegmenter: fast must be a bool, a FastConfig or a dict, got {type(fast).__name__}')


class VideoSegmenter:
    """Segments a stream frame by frame with SCNet: key frames by DeepLab, the others by propagation + correction.

    Args:
        net: an SCNet in eval mode (weights loaded).
        policy: key-frame policy as ``--policy`` (``fixed:5``, ``distortion:0.3,max=10``, ``per-frame``).
        fast: False (exact path, the published numbers), True (``lib.infer.fast`` defaults), or a ``FastConfig``.
        backend: ``torch`` or ``onnxruntime`` (CPU); ``threads``: onnxruntime's CPU threads.
        size: None (the frame size) or (H, W) to resize frames for the model; outputs keep the frame size.
        channels: ``rgb`` or ``bgr`` (OpenCV's order) for numpy frames.
        palette, names: colours and legend names of ``run``'s overlays (default: Cityscapes').
    """

    def __init__(self, net, policy='fixed:5', fast=False, backend='torch', size=None, channels='rgb', threads=None,
                 palette=None, names=None):
        if channels not in CHANNEL_ORDERS:
            raise UserError(f'VideoSegmenter: channels must be one of {CHANNEL_ORDERS}, got "{channels}"')
        if size is not None and (len(size) != 2 or min(size) < 4):
            raise UserError(f'VideoSegmenter: size must be (H, W) of at least 4 pixels each, got {size}')
        self.net = net.eval()
        self.device = next(net.parameters()).device
        self.policy_text, self.channels = policy, channels
        self.fast, self.backend = _fast_config(fast), check_backend(backend)
        self.size = None if size is None else tuple(size)
        self.palette = palette if palette is not None else palette_for('cityscapes')
        self.names = names if names is not None or palette is not None else class_names('cityscapes')
        self.segmenter = build_segmenter(net, parse_policy(policy), backend, self.fast, threads)
        self.reset()

    @classmethod
    def from_config(cls, config, checkpoint, policy='fixed:5', fast=False, backend='torch', device=None, opts=(),
                    **kwargs):
        """Build from an experiment YAML (path or loaded config) and a whole-SCNet checkpoint."""
        cfg = load_config(config, opts) if isinstance(config, (str, os.PathLike)) else config
        check_backend(backend)  # before the network is loaded: a missing runtime fails at once
        net = load_scnet(cfg['model'], checkpoint, pick_device(device or cfg.get('device', 'cpu')))
        kwargs.setdefault('palette', palette_for(cfg['data']['name']))
        kwargs.setdefault('names', class_names(cfg['data']['name']))
        return cls(net, policy=policy, fast=fast, backend=backend, **kwargs)

    def reset(self):
        """Start a new stream: the next frame is a key frame."""
        self.segmenter.reset()
        self.index, self.key_frames, self.frame_size = -1, [], None  # key_frames: their indices so far

    def _to_model(self, frame, channels):
        """A frame -> (model input (1, 3, H', W') float in [0, 1], model size (h, w), frame size (H, W))."""
        if isinstance(frame, np.ndarray):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or 0 in frame.shape:
                raise UserError(f'VideoSegmenter: frame {self.index}: numpy frames must be uint8 (H, W, 3) with '
                                f'H, W > 0, got {frame.dtype} {frame.shape}')
            rgb = frame[..., ::-1] if channels == 'bgr' else frame
            x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        elif torch.is_tensor(frame):
            x = frame.unsqueeze(0) if frame.dim() == 3 else frame
            if x.dim() != 4 or x.shape[:2] != (1, 3) or not x.is_floating_point() or 0 in x.shape:
                raise UserError(f'VideoSegmenter: frame {self.index}: tensor frames must be float (3, H, W) or '
                                f'(1, 3, H, W) RGB in [0, 1], got {x.dtype} {tuple(frame.shape)}')
            x = x.to(self.device, torch.float32)
            low, high = torch.aminmax(x)
            if not (torch.isfinite(low) and torch.isfinite(high) and low >= 0 and high <= 1):
                raise UserError(f'VideoSegmenter: frame {self.index}: tensor frames must hold finite values in '
                                f'[0, 1], got [{low.item():g}, {high.item():g}] (divide uint8 values by 255)')
        else:
            raise UserError(f'VideoSegmenter: a frame must be a numpy array or a torch tensor, got '
                            f'{type(frame).__name__}')
        frame_size = tuple(x.shape[-2:])
        if self.size is not None and self.size != frame_size:
            x = F.interpolate(x, size=self.size, mode='bilinear', align_corners=False)
        image, model_size = pad_to_multiple(x)
        return image, model_size, frame_size

    @torch.no_grad()
    def step(self, frame, channels=None):
        """The next frame, numpy uint8 (H, W, 3) in ``channels`` order (default: the segmenter's) or a float tensor
        (3, H, W) / (1, 3, H, W) RGB in [0, 1], of the stream's first frame's size -> its trainIds (H, W): numpy
        uint8, or int64 on the model's device for a tensor frame."""
        self.index += 1
        image, model_size, frame_size = self._to_model(frame, channels or self.channels)
        self.frame_size = self.frame_size or frame_size
        if frame_size != self.frame_size:
            raise UserError(f'VideoSegmenter: frame {self.index} is {frame_size[1]}x{frame_size[0]} (WxH) but the '
                            f'stream started at {self.frame_size[1]}x{self.frame_size[0]}')
        labels, is_key, _ = self.segmenter.step(image)  # (1, H', W') on the padded model grid
        if is_key:
            self.key_frames.append(self.index)
        if isinstance(frame, np.ndarray):
            return labels_to_frame(labels, model_size, frame_size)
        height, width = model_size
        label = labels[:, None, :height, :width].float()
        if model_size != frame_size:
            label = F.interpolate(label, size=frame_size, mode='nearest')
        return label[0, 0].long()

    def __call__(self, frames):
        """Segment a stream (restarting the policy): yields :meth:`step` of every frame of ``frames``."""
        self.reset()
        for frame in frames:
            yield self.step(frame)

    def check_memory(self, frame_size):
        """Refuse frames whose inference would not fit in memory (a small frame's peak scaled by the pixel count)."""
        height, width = self.size or frame_size
        if height * width <= 1024 * 2048:
            return  # the paper's size: every supported machine runs it
        probe = (128, 256)
        segmenter = build_segmenter(self.net, FixedInterval(2), 'torch', self.fast)

        def two_steps():  # a key and a non-key frame
            for _ in range(2):
                segmenter.step(torch.zeros(1, 3, *probe, device=self.device))
        need = profiling.peak_memory_bytes(two_steps, self.device) * height * width / (probe[0] * probe[1])
        available = profiling.available_memory_bytes(self.device)
        if available is not None and need > available:
            scale = (available / need) ** 0.5
            raise UserError(f'frames of {width}x{height} (WxH) need about {need / 2 ** 30:.1f} GiB for inference, '
                            f'{available / 2 ** 30:.1f} GiB are available; run the model at a smaller size, e.g. '
                            f'--size {int(height * scale) // 4 * 4} {int(width * scale) // 4 * 4}')

    def run(self, source, out, overwrite=False, save_labels=False, save_overlay=False, video=True, fps=None,
            progress=False, start=0, max_frames=None):
        """Segment ``source`` (a video file, frame folder, camera index, stream URL or ``FrameSource``; its frames
        ``start, ...``, at most ``max_frames``) into the folder ``out`` -> the summary dict.

        Writes ``segmentation.mp4`` (or ``.avi``), ``labels/NNNNNN.png``, ``overlay/NNNNNN.png`` (NNNNNN: the input's
        frame number) and ``summary.json``, staged as ``out.partial/``.  Ctrl-C leaves ``out.partial/``; for a live
        source it ends the stream and commits what was segmented (a second Ctrl-C abandons the run)."""
        if isinstance(source, (str, os.PathLike, int)):
            source = open_frame_source(str(source), start, max_frames)
        elif start or max_frames is not None:
            source.limit(start, max_frames)
        folder = StagedFolder(out, KIND, 'OUTPUT', overwrite=overwrite, apart_from=[] if source.live else [source.path])
        with folder:
            try:
                summary = self._write(source, folder, save_labels, save_overlay, video, fps, progress)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(f'the frames segmented so far are in {folder.partial}') from None
            mismatch = source.count_mismatch()
            if mismatch:
                warnings.warn(mismatch)
            write_json(folder.file('summary.json'), summary, indent=2)
            folder.commit()
        return summary

    def _write(self, source, folder, save_labels, save_overlay, video, fps, progress):
        writer = FrameOutputs(folder, fps or source.fps, self.palette, save_labels=save_labels,
                              save_overlay=save_overlay, video=video, names=self.names)
        self.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        with stop_requests(source.live) as stop:
            try:
                for frame in tqdm(source, total=source.count, unit='frame', desc='infer_video', disable=not progress,
                                  dynamic_ncols=True):
                    if stop.is_set():  # asked while the source was waiting for this frame
                        break
                    if self.index < 0:
                        self.check_memory(frame.shape[:2])
                    labels = self.step(frame, channels='rgb')  # sources yield RGB
                    writer.write(source.start + self.index, frame, labels, key=self.key_frames[-1:] == [self.index])
                    if stop.is_set():
                        break
            except BaseException:
                writer.abort()
                raise
        writer.close()  # checks that the video decodes to every frame written
        seconds = time.perf_counter() - start
        frames = writer.frames
        return {'input': source.path, 'start': source.start, 'policy': self.policy_text, 'backend': self.backend,
                'frames': frames, 'interrupted': stop.is_set(), 'frames_announced': source.announced,
                'frames_decoded': getattr(source, 'decoded', None),
                'key_frames': [source.start + k for k in self.key_frames],
                'frame_size': list(self.frame_size), 'model_size': list(self.size or self.frame_size),
                'fast': None if self.fast is None else dataclasses.asdict(self.fast), 'video': writer.video_name,
                'seconds': round(seconds, 3), 'cpu_seconds': round(time.process_time() - start_cpu, 3),
                'frames_per_second': frames / seconds}


@contextmanager
def stop_requests(live):
    """For a live source (in the main thread, the one that gets signals), Ctrl-C sets the yielded event; a second
    Ctrl-C interrupts."""
    stop = threading.Event()
    if not live or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
    previous = signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
