"""Streaming video input and output for inference, one frame at a time: frame sources (RGB ``uint8 (H, W, 3)``),
padding to the model's multiple of 4 and back, and the per-frame writers."""
import itertools
import os
import re

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lib.utils.atomic import write_png
from lib.utils.errors import UserError
from lib.utils.metrics import IGNORE_INDEX
from lib.utils.palette import colorize
from lib.utils.visualize import video_frame

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')


def _natural_key(name):
    # 'frame2.png' before 'frame10.png': frame folders are rarely zero-padded consistently.
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r'(\d+)', name)]


class FrameSource:
    """Iterates RGB uint8 frames, all of the first one's size; :meth:`limit` keeps frames ``start, ...``, at most
    ``max_frames``.  ``live`` sources (cameras, streams) end when the stream does."""

    path = ''
    fps = 25.0
    count = None  # number of frames if known up front (for the progress bar), else None
    announced = None  # the frame count a video container states (None: not a container, or it states none)
    live = False
    start = 0
    max_frames = None

    def limit(self, start=0, max_frames=None):
        self.start, self.max_frames = start, max_frames
        if self.count is not None:
            self.count = min(max(self.count - start, 0), max_frames or self.count)
        return self

    def count_mismatch(self):
        """One line when the source turned out to hold another number of frames than it announced, else None."""
        return None

    def _read(self):
        """Yields ``(path naming the frame in an error, RGB frame)`` from frame ``self.start`` on."""
        raise NotImplementedError

    def __iter__(self):
        size = None
        reader = self._read()
        try:
            for index, (where, frame) in enumerate(itertools.islice(reader, self.max_frames)):
                size = size or frame.shape[:2]
                if frame.shape[:2] != size:
                    raise UserError(f'{where}: frame {self.start + index} is {frame.shape[1]}x{frame.shape[0]} (WxH) '
                                    f'but the stream started at {size[1]}x{size[0]}; all frames must have one size')
                yield frame
        finally:
            reader.close()  # releases a capture at once, also when the caller stops early
        if size is None:
            after = f' after the first {self.start}' if self.start else ''
            raise UserError(f'{self.path}: contains no frames{after}')


class ImageFolderSource(FrameSource):
    """A folder of image files, in natural sort order of their names."""

    def __init__(self, path):
        self.path = path
        self.files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
        if not self.files:
            raise UserError(f'{path}: folder holds no image files (expected {", ".join(IMAGE_EXTENSIONS)})')
        self.count = len(self.files)

    def _read(self):
        channels = None
        for name in self.files[self.start:]:
            file = os.path.join(self.path, name)
            image = cv2.imread(file, cv2.IMREAD_UNCHANGED)
            if image is None:
                raise UserError(f'{file}: not a readable image')
            found = 1 if image.ndim == 2 else image.shape[2]
            channels = channels or found
            if found != channels:  # a grey frame in a colour clip (or the reverse) is another camera's frame
                raise UserError(f'{file}: has {found} channel(s) but the clip started with {channels}; all frames '
                                f'must be colour or all grey')
            bgr = cv2.imread(file, cv2.IMREAD_COLOR)
            yield file, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _frame_rate(capture):
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if 0 < fps <= 1000 else 25.0  # NaN and 0 (unknown) fail the test too


def _captured(capture, path, start, skipped=0):
    """Yields ``(path, RGB frame)`` of an open capture from its frame ``start`` on (``skipped`` already read)."""
    for _ in range(start - skipped):
        if not capture.grab():
            return
    while True:
        ok, bgr = capture.read()
        if not ok:
            return
        yield path, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class VideoFileSource(FrameSource):
    """A video file read through OpenCV; ``decoded``: the frames a full pass produced (None until one ended)."""

    def __init__(self, path):
        self.path = path
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise UserError(f'{path}: cannot be opened as a video (unknown format, unreadable, or no frames)')
            # Decode one frame now, so that a container without decodable frames fails before any output exists.
            if not capture.read()[0]:
                raise UserError(f'{path}: contains no decodable frames (zero-length video?)')
            self.fps = _frame_rate(capture)
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.count = count if count > 0 else None  # an estimate: the progress bar's total
        self.announced = self.count
        self.decoded = None

    def _read(self):
        capture = cv2.VideoCapture(self.path)
        decoded = 0
        try:
            for decoded, frame in enumerate(_captured(capture, self.path, self.start), 1):
                yield frame
            if self.start == 0:  # a full pass: what the container holds
                self.decoded = decoded
        finally:
            capture.release()

    def count_mismatch(self):
        """One line when the container announced another frame count than decoded, else None."""
        if self.announced is None or self.decoded is None or self.announced == self.decoded:
            return None
        return (f'{self.path}: the container announces {self.announced} frames but {self.decoded} decoded '
                f'(damaged or truncated video?)')


class CaptureSource(FrameSource):
    """A camera (its index) or stream URL through OpenCV, its first frame read at once (a dead one fails early)."""

    live = True

    def __init__(self, spec):
        self.path = spec
        what = f'camera {spec}' if spec.isdigit() else f'stream {spec}'
        self.capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        ok, self.first = self.capture.read() if self.capture.isOpened() else (False, None)
        if not ok:
            self.capture.release()
            raise UserError(f'{what}: cannot be opened or delivers no frames')
        self.fps = _frame_rate(self.capture)

    def _read(self):
        try:
            if self.start == 0:
                yield self.path, cv2.cvtColor(self.first, cv2.COLOR_BGR2RGB)
            yield from _captured(self.capture, self.path, self.start, skipped=1)
        finally:
            self.capture.release()


def open_frame_source(spec, start=0, max_frames=None):
    """A folder of images, a video file, a camera index (digits) or a stream URL (``scheme://...``) -> a
    :class:`FrameSource` of frames ``start, ...`` (at most ``max_frames``)."""
    spec = os.fspath(spec)
    if spec.isdigit() or '://' in spec:
        return CaptureSource(spec).limit(start, max_frames)
    if os.path.isdir(spec):
        return ImageFolderSource(spec).limit(start, max_frames)
    if not os.path.exists(spec):
        raise UserError(f'{spec}: no such video file or frame folder')
    if not os.path.isfile(spec) or not os.access(spec, os.R_OK):
        raise UserError(f'{spec}: not a readable file')
    if os.path.getsize(spec) == 0:
        raise UserError(f'{spec}: empty file (zero length), not a video')
    return VideoFileSource(spec).limit(start, max_frames)


def pad_to_multiple(x, multiple=4):
    """``x (N, C, H, W)`` -> ``(padded (N, C, H', W'), (H, W))``, H', W' multiples of ``multiple``, the bottom and
    right border replicated (a black border would be a fake edge)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not (pad_h or pad_w):
        return x, (height, width)
    return F.pad(x, (0, pad_w, 0, pad_h), mode='replicate'), (height, width)


def frame_to_tensor(frame, size=None, multiple=4, device='cpu'):
    """RGB uint8 ``(H, W, 3)`` -> (float ``(1, 3, H', W')`` in [0, 1] resized to ``size`` and padded, ``(h, w)``)."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if size is not None and tuple(size) != tuple(frame.shape[:2]):
        x = F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=False)  # (1, 3, h, w)
    return pad_to_multiple(x, multiple)


def labels_to_frame(labels, model_size, frame_size):
    """Labels ``(1, H', W')`` on the padded model grid -> uint8 ``(H, W)``: padding cropped, nearest resize."""
    height, width = model_size
    label = labels[:, None, :height, :width].to(torch.uint8)  # (1, 1, h, w)
    if (height, width) != tuple(frame_size):
        label = F.interpolate(label, size=tuple(frame_size), mode='nearest')
    return label[0, 0].cpu().numpy()


def overlay(frame, colour, label, alpha=0.5):
    """Blend a colourised label map over the RGB frame; ignored pixels (``IGNORE_INDEX``) keep the frame as it is."""
    blended = cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)
    return np.where((label == IGNORE_INDEX)[..., None], frame, blended)


class VideoWriter:
    """cv2.VideoWriter with the first codec this OpenCV can write, mp4v (.mp4) or MJPG (.avi); an odd frame size
    gets a replicated row / column (these 4:2:0 codecs silently drop an odd last one)."""

    CODECS = (('mp4v', '.mp4'), ('MJPG', '.avi'))

    def __init__(self, stem, fps, frame_size):
        height, width = frame_size
        self.pad = (height % 2, width % 2)  # rows, columns to add
        size = (width + self.pad[1], height + self.pad[0])
        for fourcc, extension in self.CODECS:
            self.path = stem + extension
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if self.writer.isOpened():
                self.frames = 0  # frames written so far
                return
            self.writer.release()
            if os.path.exists(self.path):
                os.remove(self.path)
        raise UserError(f'{stem}: this OpenCV build can write none of the codecs '
                        f'{", ".join(c for c, _ in self.CODECS)}')

    def write(self, rgb):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if any(self.pad):
            bgr = cv2.copyMakeBorder(bgr, 0, self.pad[0], 0, self.pad[1], cv2.BORDER_REPLICATE)
        # OpenCV >= 4.7 returns False on a full disk; older builds return None, and close() catches a short video.
        if self.writer.write(bgr) is False:
            raise UserError(f'{self.path}: could not write frame {self.frames} (disk full or over a size limit?)')
        self.frames += 1

    def close(self):
        """Finish the file and prove it complete: it must decode to every frame written."""
        if self.writer is None:
            return
        self.abort()
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        decoded = count_decodable_frames(self.path) if size else 0
        if decoded != self.frames:
            raise UserError(f'{self.path}: the finished video decodes to {decoded} of the {self.frames} frames '
                            f'written ({size} bytes; disk full or over a size limit?)')

    def abort(self):
        """Release the file without checking it (the run failed anyway)."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def count_decodable_frames(path):
    """Number of frames OpenCV decodes from the video file ``path`` (0 if it does not open)."""
    capture = cv2.VideoCapture(path)
    count = 0
    while capture.isOpened() and capture.grab():
        count += 1
    capture.release()
    return count


class FrameOutputs:
    """A run's ``labels/NNNNNN.png``, ``overlay/NNNNNN.png`` and segmentation video, each when asked for."""

    def __init__(self, folder, fps, palette, save_labels=False, save_overlay=False, video=True, names=None):
        self.folder, self.fps, self.palette, self.names = folder, fps, palette, names
        self.save_labels, self.save_overlay, self.want_video = save_labels, save_overlay, video
        self.frames, self.video = 0, None  # frames written whole; the VideoWriter, opened on the first frame

    def write(self, index, frame, label, key=False):
        """``frame`` RGB uint8 (H, W, 3), its ``label`` uint8 (H, W) map and whether it was a key frame."""
        if self.want_video and self.video is None:
            self.video = VideoWriter(self.folder.file('segmentation'), self.fps, frame.shape[:2])
        name = f'{index:06d}.png'
        if self.save_labels:
            write_png(self.folder.file('labels', name), label)
        if self.save_overlay or self.video is not None:
            blended = overlay(frame, colorize(label, self.palette), label)
            if self.save_overlay:
                write_png(self.folder.file('overlay', name), blended)
            if self.video is not None:
                self.video.write(video_frame(blended, label, self.palette, self.names, key))
        self.frames += 1

    def close(self):
        if self.video is not None:
            self.video.close()

    def abort(self):
        if self.video is not None:
            self.video.abort()

    @property
    def video_name(self):
        return None if self.video is None else os.path.basename(self.video.path)
