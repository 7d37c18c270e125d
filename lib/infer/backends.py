"""Runtime backends of video inference: ``torch`` (optionally the fast path) or ``onnxruntime`` (the two steps of
lib/infer/export.py exported at the stream's first frame, fp32, CPU)."""
import tempfile

import torch

from lib.infer.export import MIN_SIZE, export_steps, graph_tail, ort_session, require_export_extra, run_session
from lib.infer.fast import FastSCNet
from lib.infer.streaming import StreamingSegmenter
from lib.model.scnet import PropagationState
from lib.utils.errors import UserError

BACKENDS = ('torch', 'onnxruntime')


def check_backend(name):
    if name not in BACKENDS:
        raise UserError(f'backend must be one of {", ".join(BACKENDS)}, got "{name}"')
    if name == 'onnxruntime':
        for module in ('onnxruntime', 'onnx', 'onnxscript'):  # it exports the two steps at the first frame
            require_export_extra(module)
    return name


class OnnxRuntimeSCNet:
    """SCNet's two inference steps as onnxruntime sessions, exported from ``net`` (CPU, fp32) for each frame size met
    (graphs of dynamic size from ``lib.infer.export.MIN_SIZE`` up, of fixed size below); ``threads``: intra-op."""

    def __init__(self, net, tail='full', threads=None):
        self.net, self.tail, self.threads, self.align_corners = net.eval(), tail, threads, net.align_corners
        self._sessions = {}

    def sessions(self, size):
        """{graph: InferenceSession} for frames of ``size`` (H, W), exported on first use."""
        size = tuple(size)
        if size not in self._sessions:
            with tempfile.TemporaryDirectory(prefix='davss_onnx_') as folder:
                paths = export_steps(self.net, folder, size, tail=self.tail, dynamic=min(size) >= MIN_SIZE)
                self._sessions[size] = {graph: ort_session(p['onnx'], self.threads) for graph, p in paths.items()}
        return self._sessions[size]

    def _run(self, graph, size, *inputs):
        return run_session(self.sessions(size)[graph], graph, inputs)

    def key_step(self, image):
        """A key frame -> (PropagationState, labels (1, H, W) from the graph itself), as ``FastSCNet.key_step``."""
        out = self._run('key_step', image.shape[-2:], image)
        return PropagationState(out['logits'], out['image_quarter']), out['labels']

    def key_frame(self, image):
        """image (1, 3, H, W) -> PropagationState (fp32, 1/4 resolution), as ``SCNet.key_frame``."""
        return self.key_step(image)[0]

    def non_key(self, state, current, previous):
        """-> (PropagationState of ``current``, dict ``merged``, ``distortion``, ``labels``), as ``SCNet.correct``."""
        out = self._run('non_key_step', current.shape[-2:], state.logits, state.image, current, previous)
        return PropagationState(out['logits_out'], out['image_quarter_out']), out

    def non_key_step(self, state, current, previous):
        """A non-key frame -> (PropagationState, labels (1, H, W) from the graph), as ``FastSCNet.non_key_step``."""
        state, out = self.non_key(state, current, previous)
        return state, out['labels']


class OnnxRuntimeSegmenter(StreamingSegmenter):
    """StreamingSegmenter whose steps run in onnxruntime (``model`` is an :class:`OnnxRuntimeSCNet`)."""

    def propagate_and_correct(self, image):
        return self.model.non_key(self.state, image, self.previous)


def build_segmenter(net, policy, backend='torch', fast=None, threads=None):
    """The streaming segmenter of ``backend``; ``fast``: a FastConfig or None (exact; onnxruntime takes its tail)."""
    check_backend(backend)
    tail = 'full' if fast is None else fast.tail
    if backend == 'onnxruntime':
        if next(net.parameters()).device.type != 'cpu':
            raise UserError('backend onnxruntime: runs on the CPU (use --device cpu)')
        threads = threads or torch.get_num_threads()
        tail = graph_tail(tail)  # the graphs compute the sparse tail's labels densely, as the full tail
        return OnnxRuntimeSegmenter(OnnxRuntimeSCNet(net, tail, threads), policy, tail=tail)
    return StreamingSegmenter(net if fast is None else FastSCNet(net, fast), policy, tail=tail)
