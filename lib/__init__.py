"""DAVSS: video semantic segmentation with distortion-aware feature correction.

``from lib import VideoSegmenter`` is the Python API of video inference (lib/infer/video_segmenter.py).  It is imported
on first use, so that ``import lib.<module>`` stays light.
"""

__version__ = '0.1.0'  # the one version number: pyproject.toml reads it (without importing the package)
__all__ = ['VideoSegmenter']


def __getattr__(name):
    if name == 'VideoSegmenter':
        from lib.infer.video_segmenter import VideoSegmenter
        return VideoSegmenter
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
