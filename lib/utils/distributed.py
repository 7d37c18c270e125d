"""torch.distributed helpers that answer as one process of rank 0 when no process group is initialised, so the
same code runs under ``python tools/train.py`` and ``torchrun --nproc_per_node=N tools/train.py``."""
import datetime
import os
import re

import torch
import torch.distributed as dist

from lib.utils.errors import UserError


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_initialized() else 0


def get_world_size():
    return dist.get_world_size() if is_initialized() else 1


def is_main_process():
    return get_rank() == 0


def pick_device(device='auto'):
    """``'auto'`` or None: this process's GPU (torchrun's ``LOCAL_RANK``) if CUDA is available, else the CPU."""
    if device in (None, 'auto'):
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cpu':
        return torch.device('cpu')
    if not re.fullmatch(r'cuda(:\d+)?', str(device)):
        raise UserError(f'device: expected auto | cpu | cuda | cuda:N, got "{device}"')
    if not torch.cuda.is_available():
        raise UserError(f'device: "{device}" was asked for but CUDA is not available on this machine')
    return torch.device(device) if ':' in device else torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)))


def init_distributed(device='auto'):
    """Join torchrun's process group (NCCL on GPUs, else gloo; none for ``WORLD_SIZE`` 1) and return the device."""
    device = pick_device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    if world_size > 1 and not is_initialized():
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        # device_id binds NCCL to this GPU up front (no guessing in barrier()); gloo takes no device.
        kwargs = {'device_id': device} if device.type == 'cuda' else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=collective_timeout()), **kwargs)
    return device


def collective_timeout():
    """Seconds a collective waits for the other processes (``DIST_TIMEOUT``, default 600) before it fails."""
    raw = os.environ.get('DIST_TIMEOUT', '600')
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise UserError(f'DIST_TIMEOUT={raw}: expected a positive number of seconds')
    return seconds


def describe_failure(err):
    """One line for a collective that failed because another process hangs or died, else None."""
    if not is_initialized() or not isinstance(err, RuntimeError):
        return None
    text = str(err).lower()
    if 'timed out' in text or 'timeout' in text:
        return (f'rank {get_rank()} of {get_world_size()}: the other processes did not answer within '
                f'{collective_timeout():g} s (DIST_TIMEOUT); one of them hangs or died, see its own output')
    if 'connection closed' in text or 'connection reset' in text or 'broken pipe' in text:
        return (f'rank {get_rank()} of {get_world_size()}: another process left the run (connection closed); '
                f'see its own output for why')
    return None


def cleanup_distributed():
    if is_initialized():
        dist.destroy_process_group()


def barrier():
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor):
    """Sum ``tensor`` over all processes, in place; returns it (unchanged in a single process)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module, src=0):
    """Give every process rank ``src``'s buffers of ``module`` (BatchNorm running statistics), in place."""
    if is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def claimed_on_main(claim):
    """Rank 0 calls ``claim()`` (an object with ``release()``); its :class:`UserError` stops every rank with the same
    line, not only rank 0 (the others would wait in the next collective).  The claim on rank 0, None elsewhere."""
    claimed, error = None, None
    if is_main_process():
        try:
            claimed = claim()
        except UserError as err:
            error = str(err)
    errors = [e for e in all_gather_object(error) if e]
    if errors:
        if claimed is not None:
            claimed.release()
        raise UserError(errors[0])
    return claimed


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_initialized():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered
