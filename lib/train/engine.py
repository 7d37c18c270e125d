"""One training engine for every stage (:mod:`lib.train.stages`), on any number of GPUs or the CPU: the paper's Adam
schedule, validation every ``train.val_every`` epochs, ``now.pth`` / ``best.pth`` / ``final.pth``
(:mod:`lib.train.resume`), the resolved config, a text log, TensorBoard scalars and ``metrics.jsonl``.

An iteration is one optimiser step over ``train.accumulate`` batches.  A resume restarts the epoch's sampler after the
batches ``now.pth`` consumed; the data order depends only on ``(seed, epoch)``, the worker seeds on ``(seed, rank,
epoch)``: with ``data.num_workers=0`` a resume anywhere is bit-exact on the CPU; with workers it is exact at epoch
ends, and mid-epoch it sees the same samples with other random crops.
"""
import datetime
import math
import os
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lib.dataset import build_dataset, seed_worker
from lib.model.checkpoint import read_checkpoint
from lib.train.optim import apply_lr, build_optimizer
from lib.train.resume import Progress, ResumableSampler, data_layout, epoch_seed, load_training_state, save_checkpoint
from lib.train.run_folder import RunFolder
from lib.train.stages import Stage, check_init_config, get_stage, initialise, set_bn_momentum
from lib.utils import distributed
from lib.utils.config import dump_config, resolve_path
from lib.utils.errors import UserError
from lib.utils.logger import MetricLogger, ScalarWriter, close_text_log, setup_text_log
from lib.utils.runtime import determinism, seed_everything, tf32

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


class NonFiniteWatch:
    """A forward hook on the flow network of ``net``, whose non-finite output would not show in the losses (the warp
    clamps its sampling grid); :meth:`flags` says what was non-finite since the last call (device tensors, no host
    synchronisation until read)."""

    def __init__(self, net):
        self.bad = {}
        self.handles = [net.flownet.register_forward_hook(self._hook)] if hasattr(net, 'flownet') else []

    def _hook(self, module, inputs, output):
        bad = ~torch.isfinite(output.detach()).all()
        self.bad['flownet output'] = bad if not self.bad else self.bad['flownet output'] | bad

    def flags(self, losses):
        """``{name: 0-dim bool tensor}`` for every loss and the flow output of the step so far; resets."""
        flags = {name: ~torch.isfinite(value.detach()).all() for name, value in losses.items()}
        flags.update(self.bad)
        self.bad = {}
        return flags

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles = []


@dataclass
class Run:
    """Everything the loop needs, built once by :func:`setup`."""
    cfg: dict
    stage: Stage
    device: torch.device
    net: nn.Module  # the unwrapped network (what is saved)
    model: nn.Module  # what is called: ``net`` or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    val_loader: Optional[DataLoader]
    iters_per_epoch: int
    total_iters: int
    n_epochs: int
    save_dir: str
    log: object
    writer: ScalarWriter
    progress: Progress
    folder: Optional[RunFolder] = None  # the claimed experiment folder (rank 0), held while the run writes it
    watch: Optional[NonFiniteWatch] = None  # non-finite values in the losses and the flow, before each backward
    clock: tuple = (0.0, 0)  # (time.perf_counter(), iteration) when this process started training: the pace


def build_train_loader(cfg, stage):
    data_cfg, train_cfg = cfg['data'], cfg['train']
    dataset = build_dataset(data_cfg, 'train', stage.data_mode, seed=cfg['seed'])
    sampler = ResumableSampler(dataset, distributed.get_world_size(), distributed.get_rank(), cfg['seed'],
                               data_cfg['sampler_seed'])
    return DataLoader(dataset, batch_size=train_cfg['batch_size'], sampler=sampler, drop_last=True,
                      num_workers=int(data_cfg['num_workers']), worker_init_fn=seed_worker, generator=torch.Generator(),
                      pin_memory=bool(data_cfg['pin_memory']) and torch.cuda.is_available())


def wrap_for_training(net, device, cfg):
    """DistributedDataParallel over several processes (with SyncBatchNorm across GPUs); ``net`` itself alone."""
    if distributed.get_world_size() == 1:
        return net
    if device.type == 'cuda':
        # Frozen sub-networks are in eval mode, where SyncBatchNorm uses its running statistics like BatchNorm.
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == 'cuda' else None,
                                               find_unused_parameters=bool(cfg['train']['find_unused_parameters']))


def channels_last_safe(net, device):
    """Whether ``train.channels_last`` may be applied: on the CPU not with a strided 1x1 convolution of fewer than 16
    channels (tiny widths), whose oneDNN weight gradient in that layout writes out of bounds."""
    return device.type != 'cpu' or not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
                                           and min(m.in_channels, m.out_channels) < 16 for m in net.modules())


def setup(cfg, resume=False, overwrite=False, restart_epoch=False):
    """Build the run: process group, network (initialised or resumed), optimiser, loaders, logs."""
    if not cfg['experiment']:
        raise UserError('experiment: not set (outputs go to <train.save_root>/<experiment>)')
    stage = get_stage(cfg['stage'])
    save_root = resolve_path(cfg['train']['save_root'])
    save_dir = os.path.join(save_root, cfg['experiment'])
    tblog_dir = os.path.join(resolve_path(cfg['train']['tblog_root']) or save_root, cfg['experiment'])
    resume_path = os.path.join(save_dir, 'now.pth')
    if resume and not os.path.isfile(resume_path):
        raise UserError(f'--resume: {resume_path} not found (nothing to resume for experiment '
                        f'"{cfg["experiment"]}")')
    init_cfg = {key: resolve_path(value) if value else None for key, value in cfg['init'].items()}
    if not resume:
        check_init_config(stage, init_cfg)
        for key, path in init_cfg.items():
            if path and not os.path.isfile(path):
                raise UserError(f'init.{key}: checkpoint {path} not found')

    device = distributed.init_distributed(cfg['device'])
    seed_everything(cfg['seed'])  # the same initial weights on every rank
    net = stage.build_net(cfg['model'])
    sources = {} if resume else initialise(stage, net, init_cfg)
    if cfg['train']['bn_momentum'] is not None:
        for name in stage.trainable:
            set_bn_momentum(getattr(net, name), float(cfg['train']['bn_momentum']))
    net.to(device)  # the stage's frozen sub-networks froze themselves (lib.model.scnet.freeze)
    if cfg['train']['channels_last'] and channels_last_safe(net, device):
        net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(stage.param_groups(net, cfg['train']), cfg['train'])
    scaler = torch.amp.GradScaler(device.type, enabled=cfg['train']['amp'] == 'fp16')

    loader = build_train_loader(cfg, stage)
    accumulate = cfg['train']['accumulate']
    iters_per_epoch = len(loader) // accumulate
    if iters_per_epoch == 0:
        raise UserError(f'train.batch_size: {cfg["train"]["batch_size"]} x {distributed.get_world_size()} '
                        f'processes x accumulate {accumulate} is more than the {len(loader.dataset)} training '
                        f'samples of one epoch')
    total_iters = cfg['train']['max_iters'] or cfg['train']['epochs'] * iters_per_epoch
    n_epochs = math.ceil(total_iters / iters_per_epoch)
    val_loader = stage.val_loader(cfg, cfg['train']['val_split']) if cfg['train']['val_every'] else None

    # The inputs are good: claim the experiment folder before the first write to it.
    folder = distributed.claimed_on_main(lambda: RunFolder(save_dir, tblog_dir, resume, overwrite).claim())
    try:
        progress, changes = Progress(), []
        if resume:
            progress, changes = load_training_state(resume_path, net, optimizer, scaler, cfg,
                                                    data_layout(cfg, loader), restart_epoch)
        else:
            seed_everything(cfg['seed'] + distributed.get_rank())  # different augmentations on every rank

        if distributed.is_main_process():
            folder.replace_previous()  # --overwrite: no file of the old run survives beside the new config
            os.makedirs(save_dir, exist_ok=True)
            dump_config(cfg, os.path.join(save_dir, 'config.yaml'))
        log = setup_text_log(os.path.join(save_dir, 'log.txt'))
        # A resumed run writes the iterations after now.pth's again: their old lines go.
        writer = ScalarWriter(tblog_dir, os.path.join(save_dir, 'metrics.jsonl'),
                              resume_at=progress.iteration if resume else None)
        model = wrap_for_training(net, device, cfg)
        run = Run(cfg, stage, device, net, model, optimizer, scaler, loader, val_loader, iters_per_epoch,
                  total_iters, n_epochs, save_dir, log, writer, progress, folder=folder, watch=NonFiniteWatch(net))
        log_header(run, sources, resume_path if resume else None)
        for change in changes:
            log.info(f'--restart-epoch: {change}')
    except BaseException:
        if folder is not None:
            folder.release()
        raise
    return run


def log_header(run, sources, resumed_from):
    cfg, log = run.cfg, run.log
    world = distributed.get_world_size()
    effective = cfg['train']['batch_size'] * world * cfg['train']['accumulate']
    log.info(f'experiment {cfg["experiment"]}: stage {run.stage.name} on {world} process(es), device '
             f'{run.device.type}; batch {cfg["train"]["batch_size"]} x {world} x accumulate '
             f'{cfg["train"]["accumulate"]} = {effective}; {run.iters_per_epoch} iterations/epoch, '
             f'{run.total_iters} iterations ({run.n_epochs} epochs); outputs in {run.save_dir}')
    trainable = sum(p.numel() for p in run.net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in run.net.parameters() if not p.requires_grad)
    log.info(f'trainable: {", ".join(run.stage.trainable)} ({trainable} parameters); frozen: '
             f'{", ".join(run.stage.frozen) or "-"} ({frozen} parameters)')
    lists = ', '.join(f'{g["name"]} {len(g["params"])} entries of {len({id(p) for p in g["params"]})} tensors'
                      for g in run.optimizer.param_groups)
    log.info(f'optimizer {type(run.optimizer).__name__}, train.param_lists {cfg["train"]["param_lists"]} ({lists}); '
             f'data.intermediate {cfg["data"]["intermediate"]}; train.tf32 {cfg["train"]["tf32"]}')
    for name, path in sources.items():
        log.info(f'init {name} <- {path}')
    if resumed_from:
        p = run.progress
        log.info(f'resumed from {resumed_from}: iteration {p.iteration}, epoch {p.epoch} '
                 f'({"complete" if p.epoch_complete else f"{p.batches_done} batches done"})')
    if run.val_loader is not None and cfg['train']['val_split'] == 'test':
        log.info('note: train.val_split is "test": best.pth is selected on the test split (as the paper\'s CamVid '
                 'scripts do), so test results of best.pth are not held-out numbers')


def autocast(run):
    amp = run.cfg['train']['amp']
    return nullcontext() if amp is None else torch.autocast(device_type=run.device.type, dtype=AMP_DTYPES[amp])


def check_finite_before_backward(run, losses):
    """Stop before the backward when a loss or the flow is not finite on any rank (all ranks stop together)."""
    flags = run.watch.flags(losses)
    found = distributed.all_reduce_sum(torch.stack(list(flags.values())).float()).tolist()
    bad = [name for name, count in zip(flags, found) if count > 0]
    if bad:
        shown = [f'{name}={losses[name].item()}' if name in losses and distributed.get_world_size() == 1 else name
                 for name in bad]
        what = 'loss' if all(name in losses for name in bad) else 'value'
        p, kept = run.progress, os.path.join(run.save_dir, 'now.pth')
        raise UserError(f'stage {run.stage.name}: non-finite {what} ({", ".join(shown)}) at iteration {p.iteration} '
                        f'(epoch {p.epoch}); stopped without updating the weights. Last good checkpoint: '
                        f'{kept if os.path.isfile(kept) else "none written yet"}')


def train_step(run, data, accumulate):
    """One optimiser step over the next ``accumulate`` batches of the iterator ``data`` (loaded one at a time);
    returns the rank-averaged losses."""
    model = run.model
    run.optimizer.zero_grad(set_to_none=True)
    totals = None
    for i in range(accumulate):
        batch = next(data)
        # Gradients are all-reduced once per step, on the last accumulated batch.
        sync = nullcontext() if i == accumulate - 1 or model is run.net else model.no_sync()
        with sync:
            with autocast(run):
                losses = run.stage.losses(model, batch, run.device)
            check_finite_before_backward(run, losses)
            run.scaler.scale(sum(losses.values()) / accumulate).backward()
        values = torch.stack([v.detach().float() for v in losses.values()])
        totals = values if totals is None else totals + values
    averaged = distributed.all_reduce_sum(totals / accumulate).div_(distributed.get_world_size()).tolist()
    losses = dict(zip(losses, averaged))  # the names of the last batch's losses, in the order of ``totals``
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return losses


def train_one_epoch(run, epoch, start_batch):
    """Train from batch ``start_batch`` of ``epoch`` to the epoch's end or the last iteration."""
    cfg, p = run.cfg, run.progress
    accumulate, log_every = cfg['train']['accumulate'], cfg['train']['log_every']
    checkpoint_every = cfg['train']['checkpoint_every']
    run.loader.sampler.set_epoch(epoch, skip=start_batch * cfg['train']['batch_size'])
    run.loader.generator.manual_seed(epoch_seed(cfg['seed'], distributed.get_rank(), epoch))
    run.model.train()  # the frozen sub-networks stay in eval mode (SCNet.train)

    p.epoch, p.batches_done, p.epoch_complete = epoch, start_batch, False
    first_step = start_batch // accumulate
    steps = min(run.iters_per_epoch, first_step + run.total_iters - p.iteration)
    meters = MetricLogger(window=log_every)
    bar = tqdm(total=run.iters_per_epoch, initial=first_step, desc=f'epoch {epoch + 1}/{run.n_epochs}',
               dynamic_ncols=True, disable=not show_progress())
    data = iter(run.loader)
    start = time.perf_counter()
    for _ in range(first_step, steps):
        rates = apply_lr(run.optimizer, p.iteration, run.total_iters, cfg['train'])
        losses = train_step(run, data, accumulate)
        p.iteration += 1
        p.batches_done += accumulate
        meters.update(**losses)
        bar.set_postfix(meters.summary(), refresh=False)
        bar.update()
        if p.iteration % log_every == 0 or p.iteration == run.total_iters:
            run.log.info(f'epoch {epoch + 1} iter {p.iteration}/{run.total_iters} {meters} '
                         + ' '.join(f'lr_{name} {lr:.2e}' for name, lr in rates.items())
                         + f' eta {time_left(run)} peak memory {peak_memory(run.device) / 2 ** 30:.2f} GiB')
            run.writer.add_scalars(dict(losses, **{f'lr_{name}': lr for name, lr in rates.items()}), p.iteration,
                                   prefix='train/')
        mid_epoch = p.batches_done < run.iters_per_epoch * accumulate and p.iteration < run.total_iters
        if checkpoint_every and p.iteration % checkpoint_every == 0 and mid_epoch:
            save_checkpoint(run, ['now.pth'])
    bar.close()
    seconds = time.perf_counter() - start
    done = steps - first_step
    run.log.info(f'epoch {epoch + 1}: {done} iterations in {seconds:.1f} s ({done / max(seconds, 1e-9):.2f} it/s)')
    # A run that reached its last iteration mid-epoch leaves the epoch open: a resume with more iterations
    # continues it rather than skipping its remaining batches.
    p.epoch_complete = p.batches_done >= run.iters_per_epoch * accumulate


def time_left(run):
    """The remaining iterations at this process's pace so far, validation and checkpoints included: ``H:MM:SS``."""
    started, first = run.clock
    pace = (time.perf_counter() - started) / max(run.progress.iteration - first, 1)
    return str(datetime.timedelta(seconds=round(pace * (run.total_iters - run.progress.iteration))))


def peak_memory(device):
    """Bytes: the most CUDA memory tensors held on a GPU; on the CPU the process's largest resident set."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def show_progress():
    """Progress bars on the main process, when it writes to a terminal (not into a redirected log)."""
    return distributed.is_main_process() and sys.stderr.isatty()


def is_better(run, score):
    best = run.progress.best_score
    return not math.isnan(score) and (best is None or (score > best if run.stage.higher_is_better else score < best))


def evaluate(run, epoch):
    """Validate on ``train.val_split``; returns the metrics (and records the best score)."""
    start = time.perf_counter()
    metrics = run.stage.validate(run.net, run.val_loader, run.cfg, run.device, show_progress())
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
    run.writer.add_scalars(scalars, run.progress.iteration, prefix=f'{run.cfg["train"]["val_split"]}/')
    shown = ' '.join(f'{k} {v:.4f}' for k, v in scalars.items())
    run.log.info(f'validation ({run.cfg["train"]["val_split"]} split) after epoch {epoch + 1}: {shown} '
                 f'[{time.perf_counter() - start:.1f} s]')
    return metrics


def fit(run):
    """The epoch loop: train, validate, checkpoint; returns the last validation metrics (or None)."""
    p = run.progress
    metrics = None
    run.clock = (time.perf_counter(), p.iteration)
    start_epoch, start_batch = (p.epoch + 1, 0) if p.epoch_complete else (p.epoch, p.batches_done)
    for epoch in range(start_epoch, run.n_epochs):
        train_one_epoch(run, epoch, start_batch)
        start_batch = 0
        # Each rank updated its BatchNorm running statistics with its own batches since DDP's last broadcast: give
        # every rank those of rank 0 (the ones saved), so that the sharded validation sees one network.
        distributed.broadcast_buffers(run.net)
        last = p.iteration >= run.total_iters
        names = []
        if run.val_loader is not None and ((epoch + 1) % run.cfg['train']['val_every'] == 0 or last):
            metrics = evaluate(run, epoch)
            score = metrics[run.stage.score]
            if is_better(run, score):
                p.best_score = score
                names.append('best.pth')
        save_checkpoint(run, names + (['final.pth'] if last else []) + ['now.pth'])
        run.writer.flush()
        if last:
            break
    return metrics


def main(cfg, resume=False, deterministic=False, overwrite=False, restart_epoch=False):
    """Train the stage ``cfg['stage']``; returns ``{'save_dir', 'iteration', 'metrics'}``.  ``resume`` continues
    ``now.pth`` (``restart_epoch``: from the first batch of its epoch, allowing other settings); ``overwrite``
    replaces an earlier run's outputs (:mod:`lib.train.run_folder`).  Ctrl-C leaves the last ``now.pth`` intact."""
    with determinism(deterministic or cfg['deterministic']), tf32(cfg['train']['tf32']):
        run = setup(cfg, resume, overwrite, restart_epoch)
        try:
            metrics = None
            if run.progress.iteration >= run.total_iters:
                run.log.info(f'nothing to do: the checkpoint is at iteration {run.progress.iteration} of '
                             f'{run.total_iters}')
            else:
                metrics = fit(run)
                run.log.info(f'done: {os.path.join(run.save_dir, "final.pth")}')
        except KeyboardInterrupt:
            message = interrupted(run)
            close(run, quietly=True)
            raise KeyboardInterrupt(message) from None
        except BaseException:
            close(run, quietly=True)
            raise
        close(run)
        distributed.barrier()
    return {'save_dir': run.save_dir, 'iteration': run.progress.iteration, 'metrics': metrics}


def interrupted(run):
    """What an interrupted run leaves, said in the log and returned for the command line."""
    try:
        saved = read_checkpoint(os.path.join(run.save_dir, 'now.pth'))['iteration']
        left = f'now.pth holds iteration {saved} of {run.total_iters}: continue with --resume'
    except UserError:
        left = 'no checkpoint was written yet: start again'
    message = f'training stopped at iteration {run.progress.iteration}; {left}'
    run.log.info(f'interrupted: {message}')
    return message


def close(run, quietly=False):
    """Release what the run holds, every step whatever the others do; ``quietly`` (the run failed already)
    keeps a failing step (a TensorBoard flush on a full disk) from hiding the error that stopped the run."""
    steps = (run.watch.remove, run.writer.close, lambda: close_text_log(run.log),
             run.folder.release if run.folder is not None else None)
    failure = None
    for step in filter(None, steps):
        try:
            step()
        except OSError as err:
            failure = failure or err
    if failure is not None and not quietly:
        raise failure
