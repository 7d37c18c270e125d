"""Export of SCNet's two inference steps (ONNX, and optionally torch.export) and their parity check.

A runtime calls two graphs frame by frame, ``key_step`` (:class:`KeyStep`) and ``non_key_step`` (:class:`NonKeyStep`),
the host keeping the 1/4-resolution state and choosing the key frames.  Frames are RGB in [0, 1], float32, N = 1; H
and W dynamic (multiples of 4, at least :data:`MIN_SIZE`).  Traced by ``torch.export``, translated by
``torch.onnx.export(dynamo=True)``; not the TorchScript exporter: with FlowNetS and CFNet in one graph it produced
wrong CFNet logits.
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
    """The tail a graph computes: ``sparse`` is a data-dependent shortcut to the ``full`` tail's labels, so ``full``."""
    return 'full' if tail == 'sparse' else tail


class KeyStep(nn.Module):
    """The key-frame graph: ``SCNet.key_frame`` plus the label map under ``tail``."""

    def __init__(self, net, tail='full'):
        super().__init__()
        self.net, self.tail = net, tail

    def labels(self, logits, size):
        # quarter_merge labels 1/4 logits by a data-dependent shortcut; the plain resize gives the same.
        tail = 'full' if self.tail == 'quarter_merge' else self.tail
        return logits_to_labels(logits, size, self.net.align_corners, tail)

    def forward(self, image):
        """image (N, 3, H, W) -> logits (N, C, H/4, W/4), image_quarter (N, 3, H/4, W/4), labels (N, H, W) int64."""
        state = self.net.key_frame(image)
        return state.logits, state.image, self.labels(state.logits, image.shape[-2:])


class NonKeyStep(KeyStep):
    """The non-key graph: flow, one warp of the state, DMNet + CFNet correction, labels, under ``tail``."""

    def forward(self, logits, image_quarter, current, previous):
        """logits (N, C, H/4, W/4), image_quarter (N, 3, H/4, W/4): the state of previous; current, previous
        (N, 3, H, W) -> logits_out, image_quarter_out (the state of current), merged (N, C, ., .), distortion
        (N, 1, ., .) (full resolution with the ``full`` tail, else 1/4), labels (N, H, W) int64."""
        state = self.net.propagate(PropagationState(logits, image_quarter), self.net.estimate_flow(current, previous))
        out = self.net.correct(state, current, full_resolution=self.tail == 'full')
        labels = self.labels(out['merged'], current.shape[-2:])
        return state.logits, state.image, out['merged'], out['distortion'], labels


def step_modules(net, tail='full'):
    """{'key_step': KeyStep, 'non_key_step': NonKeyStep} around ``net`` (an fp32 SCNet in eval mode)."""
    if tail not in TAILS:
        raise ValueError(f'export: tail must be one of {TAILS}, got "{tail}"')
    tail = graph_tail(tail)
    return {'key_step': KeyStep(net, tail).eval(), 'non_key_step': NonKeyStep(net, tail).eval()}


def example_inputs(net, size, seed=0):
    """Inputs of both graphs at ``size`` (H, W): a smooth random frame and the same frame moved by a few pixels
    (like video), and the key step's state of the first frame."""
    h, w = size
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 16 + 2, w // 16 + 2, generator=generator)
    field = F.interpolate(coarse, size=(h + 8, w + 8), mode='bicubic', align_corners=False).clamp(0, 1)
    previous, current = field[..., 4:4 + h, 4:4 + w], field[..., 2:2 + h, 1:1 + w]
    with torch.no_grad():
        state = net.key_frame(previous)
    return {'key_step': (previous.contiguous(),),
            'non_key_step': (state.logits, state.image, current.contiguous(), previous.contiguous())}


def require_export_extra(module):
    """``import module`` for onnx, onnxruntime and onnxscript: the optional "export" extra, imported only here."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f'{module} is not installed: the ONNX export and the onnxruntime backend need the '
                        f'"export" extra, pip install -e ".[export]"') from None


def export_steps(net, out_dir, size, tail='full', dynamic=True, torch_export=False):
    """Export both steps of ``net`` (fp32, CPU), traced at ``size`` (H, W), into ``out_dir``: ``<graph>.onnx`` (and
    ``<graph>.pt2`` with ``torch_export``) -> {graph: {'onnx': path[, 'pt2': path]}}."""
    if dynamic and min(size) < MIN_SIZE:
        raise UserError(f'export: --size {size[0]} {size[1]}: both sides must be at least {MIN_SIZE} for graphs of '
                         f'dynamic size (the example frames fix which sizes trace alike)')
    for module in ('onnx', 'onnxscript'):  # torch's ONNX exporter needs both; checked before the tracing
        require_export_extra(module)
    net = net.eval()
    modules = step_modules(net, tail)
    inputs = example_inputs(net, size)
    # Dim.AUTO: torch.export keeps each frame side symbolic and records what the network needs as checks in the graph.
    frame = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
    paths = {}
    for graph in GRAPHS:
        shapes = {name: frame for name in INPUTS[graph]} if dynamic else None
        with torch.no_grad():
            program = torch.export.export(modules[graph], inputs[graph], dynamic_shapes=shapes)
        onnx_program = torch.onnx.export(program, input_names=list(INPUTS[graph]), output_names=list(OUTPUTS[graph]),
                                         opset_version=OPSET, dynamo=True, verbose=False)
        paths[graph] = {'onnx': os.path.join(out_dir, f'{graph}.onnx')}
        with atomic_path(paths[graph]['onnx']) as tmp:
            onnx_program.save(tmp, external_data=False)
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
    """Parity of one graph's outputs against PyTorch's: ``max_rel_logit_error`` (largest difference over the logit
    outputs / largest reference logit), ``argmax_agreement`` (of ``labels``), ``max_abs_error`` per float output."""
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


def check_parity(net, paths, sizes, tail='full', threads=None):
    """Run both ONNX graphs with onnxruntime and PyTorch on the same inputs at each size -> {'opset', 'tail',
    'tolerance', 'ok', graph: {'max_rel_logit_error', 'argmax_agreement' (worst), 'sizes': {'HxW': ...}}}."""
    modules = step_modules(net.eval(), tail)
    report = {'opset': OPSET, 'tail': tail, 'runtime': f'onnxruntime {require_export_extra("onnxruntime").__version__}',
              'tolerance': PARITY_TOLERANCE}
    for graph in GRAPHS:
        session = ort_session(paths[graph]['onnx'], threads)
        per_size = {}
        for size in sizes:
            inputs = example_inputs(net, size)[graph]
            with torch.no_grad():
                reference = dict(zip(OUTPUTS[graph], modules[graph](*inputs)))
            per_size[f'{size[0]}x{size[1]}'] = compare_outputs(graph, reference, run_session(session, graph, inputs))
        report[graph] = {'max_rel_logit_error': max(r['max_rel_logit_error'] for r in per_size.values()),
                         'argmax_agreement': min(r['argmax_agreement'] for r in per_size.values()),
                         'sizes': per_size}
    report['ok'] = all(report[g]['max_rel_logit_error'] <= PARITY_TOLERANCE['max_rel_logit_error']
                       and report[g]['argmax_agreement'] >= PARITY_TOLERANCE['argmax_agreement'] for g in GRAPHS)
    return report
