"""Video segmentation datasets (Cityscapes, CamVid, synthetic street video) in the official DAVSS list format."""
from lib.dataset.build import PDA_CLIP_LENGTH, build_dataset, build_eval_loader, num_classes, seed_worker
from lib.dataset.io import IGNORE_INDEX, read_flow, read_frame, read_label
from lib.dataset.video import ClipDataset, FlowPairDataset, ImageDataset, TripletDataset

__all__ = ['PDA_CLIP_LENGTH', 'IGNORE_INDEX', 'build_dataset', 'build_eval_loader', 'num_classes', 'seed_worker',
           'read_frame', 'read_label', 'read_flow', 'TripletDataset', 'ClipDataset', 'ImageDataset', 'FlowPairDataset']
