"""Stop a diverging run before it can crash: non-finite values are looked for where they are still visible.

A NaN flow does not show in the losses: the warp (``grid_sample`` with border padding) maps a NaN sampling grid to
finite values, and on the CPU its backward over such a grid crashes the process (pytorch/pytorch#24823, exit
139, no message).  So the training engine watches the flow network's output with a forward hook, and checks it
together with the losses before every backward.
"""
import torch

WATCHED = ('flownet',)  # sub-networks whose output feeds the warp


class NonFiniteWatch:
    """Forward hooks on the watched sub-networks of ``net``; :meth:`flags` says which produced a non-finite value
    since the last call (device tensors, no host synchronisation until read)."""

    def __init__(self, net, names=WATCHED):
        self.bad = {}
        self.handles = [getattr(net, name).register_forward_hook(self._hook(f'{name} output'))
                        for name in names if hasattr(net, name)]

    def _hook(self, name):
        def hook(module, inputs, output):
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            for value in outputs:
                if torch.is_tensor(value) and value.is_floating_point():
                    bad = ~torch.isfinite(value.detach()).all()
                    self.bad[name] = bad if name not in self.bad else self.bad[name] | bad
        return hook

    def flags(self, losses):
        """``{name: 0-dim bool tensor}`` for every loss and every watched output of the step so far; resets."""
        flags = {name: ~torch.isfinite(value.detach()).all() for name, value in losses.items()}
        flags.update(self.bad)
        self.bad = {}
        return flags

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []
