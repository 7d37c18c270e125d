"""hubconf.py: a relative config= is taken from the repository root, whatever the working directory."""
import os

import torch
from helpers import REPO_ROOT

from lib import VideoSegmenter
from lib.model import build_scnet
from lib.utils.config import load_config

CONFIG = 'exp/synthetic/correction.yaml'


def test_relative_config_resolves_against_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no exp/ here
    torch.manual_seed(0)
    reference = build_scnet(load_config(os.path.join(REPO_ROOT, CONFIG))['model'], stage='correction')
    checkpoint = tmp_path / 'synthetic.pth'
    torch.save(reference.state_dict(), checkpoint)
    net = torch.hub.load(REPO_ROOT, 'scnet', source='local', config=CONFIG, checkpoint='synthetic.pth')
    for (name, a), b in zip(reference.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), name  # the synthetic widths, not the published ones
    seg = torch.hub.load(REPO_ROOT, 'video_segmenter', source='local', config=CONFIG, checkpoint='synthetic.pth')
    assert isinstance(seg, VideoSegmenter) and seg.names[0] == 'road'
