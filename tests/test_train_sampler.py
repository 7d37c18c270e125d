"""The training order of ``data.sampler_seed: epoch_only`` (the paper configs) against torch 1.5's
``DistributedSampler.__iter__`` written out: its generator was seeded with the epoch alone, the indices padded by
repeating the first ones up to a multiple of the process count, and rank r took every num_replicas-th from r."""
import math
import os

import torch
from helpers import REPO_ROOT

from lib.train.engine import build_train_loader
from lib.train.resume import ResumableSampler
from lib.train.stages import get_stage
from lib.utils.config import load_config


def torch15_order(n, num_replicas, rank, epoch):
    generator = torch.Generator()
    generator.manual_seed(epoch)
    indices = torch.randperm(n, generator=generator).tolist()
    num_samples = int(math.ceil(n * 1.0 / num_replicas))
    total_size = num_samples * num_replicas
    indices += indices[:(total_size - len(indices))]
    return indices[rank:total_size:num_replicas]


def test_epoch_only_is_torch15_order_for_every_rank_and_epoch():
    for n, num_replicas in ((10, 1), (11, 4), (13, 3), (26775, 4)):
        dataset = range(n)
        for rank in range(num_replicas):
            epoch_only = ResumableSampler(dataset, num_replicas, rank, seed=666, order='epoch_only')
            run = ResumableSampler(dataset, num_replicas, rank, seed=666)
            for epoch in range(4):
                epoch_only.set_epoch(epoch)
                run.set_epoch(epoch)
                expected = torch15_order(n, num_replicas, rank, epoch)
                assert list(epoch_only) == expected, (n, num_replicas, rank, epoch)
                if n > 10:
                    assert list(run) != expected  # the run's seed moves the order: the comparison can fail
            epoch_only.set_epoch(2, skip=3)  # a resume in the middle of an epoch continues the same order
            assert list(epoch_only) == torch15_order(n, num_replicas, rank, 2)[3:]


def test_paper_configs_build_the_torch15_order_and_synthetic_the_seeded_one(synthetic_root):
    data = [f'data.root={synthetic_root}', f'data.train_list={os.path.join(synthetic_root, "list", "train.txt")}',
            'data.name=synthetic', 'model.n_classes=19', 'data.num_workers=0', 'data.crop_size=null']
    paper = load_config(os.path.join(REPO_ROOT, 'exp', 'dmnet_cityscapes', 'config.yaml'), data)
    synthetic = load_config(os.path.join(REPO_ROOT, 'exp', 'synthetic', 'dmnet.yaml'), data)
    assert paper['data']['sampler_seed'] == 'epoch_only' and synthetic['data']['sampler_seed'] == 'run'
    for cfg, seeded in ((paper, False), (synthetic, True)):
        loader = build_train_loader(cfg, get_stage('dmnet'))
        loader.sampler.set_epoch(3)
        n = len(loader.dataset)
        order = torch15_order(n, 1, 0, 3)
        assert (list(loader.sampler) != order) is seeded
