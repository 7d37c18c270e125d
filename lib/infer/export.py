"""Export of SCNet's two inference steps (ONNX, and optionally torch.export) and their parity check.

Deployment runs DAVSS as two graphs that a runtime (ONNX Runtime, TensorRT) calls frame by frame, the host code
keeping the 1/4-resolution state between calls and choosing the key frames:

- ``key_step``: ``image (N, 3, H, W)`` -> ``logits (N, C, H/4, W/4)``, ``image_quarter (N, 3, H/4, W/4)`` (the
  state) and ``labels (N, H, W)`` int64;
- ``non_key_step``: ``logits, image_quarter`` (the state of the previous frame), ``current, previous
  (N, 3, H, W)`` -> ``logits_out, image_quarter_out`` (the state of ``current``), ``merged`` and ``distortion``
  (at (H, W) with the ``full`` tail, at (H/4, W/4) with the ``quarter_*`` tails, as ``SCNet.correct`` returns them)
  and ``labels (N, H, W)`` int64.

Frames are RGB in [0, 1], float32, one at a time (N = 1); H and W are dynamic (multiples of 4, at least
:data:`MIN_SIZE`; ``lib.infer.backends`` exports smaller frames at a fixed size).  Both graphs are traced by
``torch.export`` and translated by the ONNX exporter of torch (``torch.onnx.export(dynamo=True)``), opset
:data:`OPSET`; resample2d is its PyTorch path, ``grid_sample`` (ONNX ``GridSample``, border padding,
``align_corners=True``).  The older TorchScript exporter is not used: with FlowNetS and CFNet in one graph it
produced wrong CFNet logits (differences of order 1 against PyTorch; each network alone exported correctly).
"""
import importlib
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.infer.labels import TAILS, logits_to_labels
from lib.model.scnet import PropagationState
from lib.utils.atomic import atomic_path
from lib.utils.errors import UserError

OPSET = 18
MIN_SIZE = 128  # smallest frame side of the dynamic graphs (and of the example frames they are traced with)
GRAPHS = ('key_step', 'non_key_step')
INPUTS = {'key_step': ('image',), 'non_key_step': ('logits', 'image_quarter', 'current', 'previous')}
OUTPUTS = {'key_step': ('logits', 'image_quarter', 'labels'),
           'non_key_step': ('logits_out', 'image_quarter_out', 'merged', 'distortion', 'labels')}
# Outputs compared as logits (relative error) and as class maps (agreement) by the parity check.
LOGIT_OUTPUTS = {'key_step': ('logits',), 'non_key_step': ('logits_out', 'merged')}
# What a correct export reaches: float32 rounding in a different order of operations (measured ~1e-6 .. 1e-5).
PARITY_TOLERANCE = {'max_rel_logit_error': 1e-3, 'argmax_agreement': 0.999}


def graph_tail(tail):
    """The tail a graph computes: ``sparse`` is the ``full`` tail computed only where it matters, a data-dependent
    shortcut (``lib.infer.labels.sparse_merge_argmax``) a static graph cannot hold, so its graph is the ``full`` one."""
    return 'full' if tail == 'sparse' else tail


class KeyStep(nn.Module):
    """The key-frame graph: ``SCNet.key_frame`` plus the label map under ``tail``."""

    def __init__(self, net, tail='full'):
        super().__init__()
        self.net = net
        self.tail = tail

    def forward(self, image):
        """
        Args:
            image: (N, 3, H, W) RGB in [0, 1].
        Returns:
            logits (N, C, H/4, W/4), image_quarter (N, 3, H/4, W/4), labels (N, H, W) int64.
        """
        state = self.net.key_frame(image)
        # quarter_merge labels the 1/4 key logits by a data-dependent shortcut; the plain resize gives the same.
        labels = logits_to_labels(state.logits, image.shape[-2:], self.net.align_corners,
                                  'full' if self.tail == 'quarter_merge' else self.tail)
        return state.logits, state.image, labels


class NonKeyStep(nn.Module):
    """The non-key graph: flow, one warp of the state, DMNet + CFNet correction, labels, under ``tail``."""

    def __init__(self, net, tail='full'):
        super().__init__()
        self.net = net
        self.tail = tail

    def forward(self, logits, image_quarter, current, previous):
        """
        Args:
            logits, image_quarter: (N, C, H/4, W/4), (N, 3, H/4, W/4) the state of ``previous``.
            current, previous: (N, 3, H, W) RGB in [0, 1].
        Returns:
            logits_out, image_quarter_out: the state carried to ``current``; merged (N, C, ., .), distortion
            (N, 1, ., .) at (H, W) for the ``full`` tail, else at (H/4, W/4); labels (N, H, W) int64.
        """
        state = self.net.propagate(PropagationState(logits, image_quarter), self.net.estimate_flow(current, previous))
        out = self.net.correct(state, current, full_resolution=self.tail == 'full')
        labels = logits_to_labels(out['merged'], current.shape[-2:], self.net.align_corners,
                                  'full' if self.tail == 'quarter_merge' else self.tail)  # as in the key step
        return state.logits, state.image, out['merged'], out['distortion'], labels


def step_modules(net, tail='full'):
    """{'key_step': KeyStep, 'non_key_step': NonKeyStep} around ``net`` (an fp32 SCNet in eval mode)."""
    if tail not in TAILS:
        raise ValueError(f'export: tail must be one of {TAILS}, got "{tail}"')
    tail = graph_tail(tail)
    return {'key_step': KeyStep(net, tail).eval(), 'non_key_step': NonKeyStep(net, tail).eval()}


def example_inputs(net, size, batch=1, seed=0):
    """Inputs of both graphs at ``size`` (H, W): a smooth random frame and the same frame moved by a few pixels
    (like video), and the key step's state of the first frame."""
    h, w = size
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, h // 16 + 2, w // 16 + 2, generator=generator)
    field = F.interpolate(coarse, size=(h + 8, w + 8), mode='bicubic', align_corners=False).clamp(0, 1)
    previous, current = field[..., 4:4 + h, 4:4 + w], field[..., 2:2 + h, 1:1 + w]
    with torch.no_grad():
        state = net.key_frame(previous)
    return {'key_step': (previous.contiguous(),),
            'non_key_step': (state.logits, state.image, current.contiguous(), previous.contiguous())}


def _dynamic_shapes(graph):
    """Dynamic height and width (``Dim.AUTO``: torch.export keeps each size symbolic and records what the network
    needs, e.g. the crops of the transposed convolutions, as checks in the graph).  The batch stays that of the
    example inputs (1, a video stream)."""
    frame = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    if graph == 'key_step':
        return {'image': frame}
    return {'logits': frame, 'image_quarter': frame, 'current': frame, 'previous': frame}


def export_program(module, inputs, graph, dynamic=True):
    """``torch.export`` of one step module -> ExportedProgram (shapes dynamic unless ``dynamic=False``)."""
    return torch.export.export(module, inputs, dynamic_shapes=_dynamic_shapes(graph) if dynamic else None)


def require_export_extra(module):
    """``import module`` for onnx, onnxruntime and onnxscript: the optional "export" extra, imported only here."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f'{module} is not installed: the ONNX export and the onnxruntime backend need the '
                        f'"export" extra, pip install -e ".[export]"') from None


def export_onnx(program, path, graph):
    """ExportedProgram -> ONNX file at ``path`` (written under a temporary name, then renamed)."""
    onnx_program = torch.onnx.export(program, input_names=list(INPUTS[graph]), output_names=list(OUTPUTS[graph]),
                                     opset_version=OPSET, dynamo=True, verbose=False)
    with atomic_path(path) as tmp:
        onnx_program.save(tmp, external_data=False)
    return path


def export_steps(net, out_dir, size, tail='full', dynamic=True, torch_export=False):
    """Export both steps of ``net`` into ``out_dir``: ``<graph>.onnx`` (and ``<graph>.pt2`` with ``torch_export``).

    Args:
        net: SCNet (fp32, on CPU); put into eval mode.
        size: (H, W) of the example frames the graphs are traced with.
    Returns:
        {graph: {'onnx': path[, 'pt2': path]}}.
    """
    if dynamic and min(size) < MIN_SIZE:
        raise UserError(f'export: --size {size[0]} {size[1]}: both sides must be at least {MIN_SIZE} for graphs of '
                         f'dynamic size (the example frames fix which sizes trace alike)')
    for module in ('onnx', 'onnxscript'):  # torch's ONNX exporter needs both; checked before the tracing
        require_export_extra(module)
    net = net.eval()
    modules = step_modules(net, tail)
    inputs = example_inputs(net, size)
    paths = {}
    for graph in GRAPHS:
        with torch.no_grad():
            program = export_program(modules[graph], inputs[graph], graph, dynamic)
        paths[graph] = {'onnx': export_onnx(program, os.path.join(out_dir, f'{graph}.onnx'), graph)}
        if torch_export:
            pt2 = os.path.join(out_dir, f'{graph}.pt2')
            with atomic_path(pt2) as tmp:
                torch.export.save(program, tmp)
            paths[graph]['pt2'] = pt2
    return paths


def ort_session(path, threads=None):
    """An onnxruntime CPU InferenceSession of ``path`` (``threads``: intra-op threads, None = its default)."""
    onnxruntime = require_export_extra('onnxruntime')
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def run_session(session, graph, inputs):
    """Feed torch tensors to a session by the graph's input names -> {output name: torch tensor}."""
    feed = {name: value.detach().cpu().contiguous().numpy() for name, value in zip(INPUTS[graph], inputs)}
    outputs = session.run(list(OUTPUTS[graph]), feed)
    return {name: torch.from_numpy(np.asarray(value)) for name, value in zip(OUTPUTS[graph], outputs)}


def compare_outputs(graph, reference, candidate):
    """Parity of one graph's outputs against PyTorch's.

    ``max_rel_logit_error``: the largest absolute difference over the logit outputs divided by the largest absolute
    reference logit (a scale-free error); ``argmax_agreement``: the fraction of equal pixels of ``labels``;
    ``max_abs_error``: per floating-point output.
    """
    errors = {}
    for name in OUTPUTS[graph]:
        ref, got = reference[name], candidate[name]
        if tuple(ref.shape) != tuple(got.shape):
            raise ValueError(f'export parity: {graph}.{name} has shape {tuple(got.shape)}, PyTorch gives '
                             f'{tuple(ref.shape)}')
        if ref.is_floating_point():
            errors[name] = (got.double() - ref.double()).abs().max().item()
    rel = max(errors[name] / max(reference[name].abs().max().item(), 1e-12) for name in LOGIT_OUTPUTS[graph])
    agreement = (candidate['labels'] == reference['labels']).double().mean().item()
    return {'max_rel_logit_error': rel, 'argmax_agreement': agreement, 'max_abs_error': errors}


def check_parity(net, paths, sizes, tail='full', threads=None, seed=0):
    """Run both ONNX graphs with onnxruntime and PyTorch on the same inputs at each size; compare.

    Returns:
        {'opset', 'tail', 'tolerance', 'ok', graph: {'max_rel_logit_error', 'argmax_agreement' (worst over the
        sizes), 'sizes': {'HxW': compare_outputs(...)}}}.
    """
    modules = step_modules(net.eval(), tail)
    report = {'opset': OPSET, 'tail': tail, 'runtime': _ort_version(), 'tolerance': PARITY_TOLERANCE}
    for graph in GRAPHS:
        session = ort_session(paths[graph]['onnx'], threads)
        per_size = {}
        for size in sizes:
            inputs = example_inputs(net, size, seed=seed)[graph]
            with torch.no_grad():
                reference = dict(zip(OUTPUTS[graph], modules[graph](*inputs)))
            per_size[f'{size[0]}x{size[1]}'] = compare_outputs(graph, reference, run_session(session, graph, inputs))
        report[graph] = {'max_rel_logit_error': max(r['max_rel_logit_error'] for r in per_size.values()),
                         'argmax_agreement': min(r['argmax_agreement'] for r in per_size.values()),
                         'sizes': per_size}
    report['ok'] = all(report[g]['max_rel_logit_error'] <= PARITY_TOLERANCE['max_rel_logit_error']
                       and report[g]['argmax_agreement'] >= PARITY_TOLERANCE['argmax_agreement'] for g in GRAPHS)
    return report


def _ort_version():
    return f'onnxruntime {require_export_extra("onnxruntime").__version__}'
