"""The DAVSS networks; see docs/models.md."""
from lib.model.cfnet import CFNet
from lib.model.checkpoint import load_scnet
from lib.model.deeplabv3plus import DeepLabV3Plus
from lib.model.dmnet import DMNet
from lib.model.flownet import FlowNetS
from lib.model.scnet import PropagationState, SCNet, SCNetDMNet, Warp, build_scnet

__all__ = ['CFNet', 'DMNet', 'DeepLabV3Plus', 'FlowNetS', 'PropagationState', 'SCNet', 'SCNetDMNet', 'Warp',
           'build_scnet', 'load_scnet']
