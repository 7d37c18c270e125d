"""Installs the ``lib`` package (``pip install -e .``)."""
from setuptools import find_packages, setup

setup(
    name='davss',
    version='0.1.0',
    description='Video semantic segmentation with distortion-aware feature correction (DAVSS), in PyTorch 2',
    packages=find_packages(include=['lib', 'lib.*']),
    python_requires='>=3.9',
)
