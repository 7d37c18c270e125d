"""Synthetic street video with ground-truth labels and flow on every frame, in the Cityscapes layout (docs/data.md):
:mod:`lib.synthetic.scene` renders a frame, :mod:`lib.synthetic.writer` writes a set."""
from lib.synthetic.scene import DIFFICULTIES, Difficulty, difficulty_with, snippet_name
from lib.synthetic.writer import generate

__all__ = ['DIFFICULTIES', 'Difficulty', 'difficulty_with', 'generate', 'snippet_name']
