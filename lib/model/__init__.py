"""The DAVSS networks; see docs/models.md."""
from .cfnet import CFNet
from .checkpoint import load_scnet
from .deeplabv3plus import DeepLabV3Plus
from .dmnet import DMNet
from .flownet import FlowNetS
from .scnet import PropagationState, SCNet, SCNetDMNet, build_scnet
from .warp import Warp

__all__ = ['CFNet', 'DMNet', 'DeepLabV3Plus', 'FlowNetS', 'PropagationState', 'SCNet', 'SCNetDMNet', 'Warp',
           'build_scnet', 'load_scnet']
