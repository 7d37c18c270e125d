"""A DistributedSampler that can start part-way through an epoch, so that a resumed run sees exactly the samples
the interrupted run had not seen yet.

It is used with one process too (``num_replicas=1``): its order depends only on ``(seed, epoch)``, never on the
global RNG, which is what makes the data order of a resumed run reproducible.
"""
import itertools

from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose next epoch skips its first ``skip`` indices (set with :meth:`set_epoch`)."""

    def __init__(self, dataset, num_replicas, rank, seed, shuffle=True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return self.num_samples - self.skip
