"""resample2d: the PyTorch reference against a naive loop of the kernel formula, gradients, dispatch, and (with a
GPU) the CUDA extension against the reference."""
import importlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from lib.ops import cuda_extension_available, cuda_toolkit, resample2d, resample2d_reference
from lib.ops.resample2d import cuda_backward, scatter_grad_input

# `lib.ops.resample2d` is shadowed by the function of the same name; the module holds the dispatch state.
resample2d_module = importlib.import_module('lib.ops.resample2d')

needs_cuda_extension = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_extension_available()),
    reason='needs a CUDA device and the compiled resample2d extension')


def naive_sample(src, xf, yf):
    """The kernel formula at one position of one (C, H, W) float64 map: 4 corners each clamped to the map."""
    _, h, w = src.shape

    def clamp(v, size):
        return min(max(v, 0), size - 1)

    x0, y0 = math.floor(xf), math.floor(yf)
    alpha, beta = xf - x0, yf - y0
    left, right = clamp(x0, w), clamp(x0 + 1, w)
    top, bottom = clamp(y0, h), clamp(y0 + 1, h)
    return ((1 - alpha) * (1 - beta) * src[:, top, left] + alpha * (1 - beta) * src[:, top, right]
            + (1 - alpha) * beta * src[:, bottom, left] + alpha * beta * src[:, bottom, right])


def naive_resample2d(input, flow):
    """The kernel formula, one pixel at a time in float64 (differentiable w.r.t. ``input``)."""
    n, c, h, w = input.shape
    out = torch.empty(n, c, h, w, dtype=torch.float64)
    src = input.double()
    for b in range(n):
        for y in range(h):
            for x in range(w):
                out[b, :, y, x] = naive_sample(src[b], x + float(flow[b, 0, y, x]), y + float(flow[b, 1, y, x]))
    return out


def naive_gradients(input, flow, grad_output, eps=1e-6):
    """Float64 gradients of the naive loop for the output gradient ``grad_output``: w.r.t. the input by autograd
    through the loop, w.r.t. the flow by central differences at each pixel (its output depends on its flow only;
    flows must keep away from integer positions, see :func:`random_flow`)."""
    n, c, h, w = input.shape
    src = input.detach().double().requires_grad_(True)
    g = grad_output.double()
    (naive_resample2d(src, flow) * g).sum().backward()
    grad_flow = torch.zeros(n, 2, h, w, dtype=torch.float64)
    values = src.detach()
    for b in range(n):
        for y in range(h):
            for x in range(w):
                xf, yf = x + float(flow[b, 0, y, x]), y + float(flow[b, 1, y, x])
                for k, (dx, dy) in enumerate(((eps, 0.0), (0.0, eps))):
                    change = naive_sample(values[b], xf + dx, yf + dy) - naive_sample(values[b], xf - dx, yf - dy)
                    grad_flow[b, k, y, x] = (g[b, :, y, x] * change).sum() / (2 * eps)
    return src.grad, grad_flow


def random_flow(n, h, w, reach, generator, dtype=torch.float64, device='cpu'):
    """Flow in [-reach, reach] pixels whose sample positions keep >= 0.1 px from integers (where the bilinear
    warp has kinks, so finite differences and mixed precisions disagree legitimately)."""
    flow = (torch.rand(n, 2, h, w, generator=generator, dtype=torch.float64) * 2 - 1) * reach
    frac = flow - flow.floor()  # positions x + flow share the fractional part of flow
    flow = flow.floor() + 0.1 + 0.8 * frac
    return flow.to(device=device, dtype=dtype)


def random_case(n, c, h, w, reach, seed, dtype=torch.float64, device='cpu'):
    generator = torch.Generator().manual_seed(seed)
    input = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    return input, random_flow(n, h, w, reach, generator, dtype=dtype, device=device)


def test_naive_loop_is_identity_for_zero_flow_and_a_shift_for_integer_flow():
    input, _ = random_case(1, 2, 4, 6, reach=0, seed=0)
    zero = torch.zeros(1, 2, 4, 6, dtype=torch.float64)
    assert torch.equal(naive_resample2d(input, zero), input)
    shift = zero.clone()
    shift[:, 0] = 2  # out[y, x] = in[y, min(x + 2, W - 1)]
    expected = input[..., [2, 3, 4, 5, 5, 5]]
    assert torch.equal(naive_resample2d(input, shift), expected)


@pytest.mark.parametrize('n, c, h, w, reach, seed', [(2, 3, 5, 7, 3.0, 1), (1, 4, 6, 3, 8.0, 2), (3, 1, 1, 5, 2.0, 3)])
def test_reference_matches_naive_loop(n, c, h, w, reach, seed):
    generator = torch.Generator().manual_seed(seed)
    input = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64)
    # Unconstrained flow (integer positions included) reaching well outside the map.
    flow = (torch.rand(n, 2, h, w, generator=generator, dtype=torch.float64) * 2 - 1) * reach
    flow[0, :, 0, 0] = torch.tensor([1.0, 0.0], dtype=torch.float64)  # an exact integer position
    xs = torch.arange(w, dtype=torch.float64) + flow[:, 0]
    ys = torch.arange(h, dtype=torch.float64).view(h, 1) + flow[:, 1]
    assert ((xs < 0) | (xs > w - 1) | (ys < 0) | (ys > h - 1)).any()  # the border handling is exercised
    torch.testing.assert_close(resample2d_reference(input, flow), naive_resample2d(input, flow),
                               rtol=1e-10, atol=1e-10)


def test_reference_float32_matches_naive_loop():
    input, flow = random_case(2, 3, 6, 9, reach=4.0, seed=4, dtype=torch.float32)
    torch.testing.assert_close(resample2d_reference(input, flow).double(), naive_resample2d(input, flow),
                               rtol=1e-5, atol=1e-5)


def test_reference_gradcheck_both_inputs():
    input, flow = random_case(2, 2, 4, 5, reach=2.5, seed=5)
    input.requires_grad_(True)
    flow.requires_grad_(True)
    assert torch.autograd.gradcheck(resample2d_reference, (input, flow), eps=1e-6, atol=1e-5)



# --- non-finite flows --------------------------------------------------------------------------------------------
# A NaN flow component reads like -inf: position -1 along that axis, i.e. the first column (dx) or row (dy), with a
# zero gradient for that component. torch's CPU grid_sample backward segfaults on a NaN grid (pytorch#24823), so
# every NaN backward of the PyTorch path runs in a subprocess.

NAN_CASE = textwrap.dedent("""
    import sys
    import torch
    from lib.ops import resample2d
    generator = torch.Generator().manual_seed(60)
    input = torch.randn(1, 3, 16, 32, generator=generator, dtype=torch.float32).requires_grad_(True)
    flow = (torch.rand(1, 2, 16, 32, generator=generator) * 6 - 3)
    flow[0, 0, 5, 7] = float('nan')
    flow[0, 1, 9, 20] = float('nan')
    flow.requires_grad_(True)
    out = resample2d(input, flow)
    grad_output = torch.randn(out.shape, generator=generator)
    (out * grad_output).sum().backward()
    torch.save({'input': input.detach(), 'flow': flow.detach(), 'grad_output': grad_output, 'out': out.detach(),
                'grad_input': input.grad, 'grad_flow': flow.grad}, sys.argv[1])
""")


def test_nan_flow_backward_on_cpu_gives_the_minus_inf_result_instead_of_a_segfault(tmp_path):
    saved = tmp_path / 'nan_case.pt'
    done = subprocess.run([sys.executable, '-c', NAN_CASE, str(saved)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT, DAVSS_RESAMPLE2D='torch', OMP_NUM_THREADS='1'))
    assert done.returncode == 0, f'rc {done.returncode} (-11: segfault): {done.stderr[-2000:]}'
    got = torch.load(saved, weights_only=True)
    assert torch.isfinite(got['grad_input']).all() and torch.isfinite(got['grad_flow']).all()
    # The same case with -inf where the NaNs were, through the unchanged finite/infinite path: bit for bit.
    flow = got['flow'].nan_to_num(nan=-float('inf'))
    input = got['input'].clone().requires_grad_(True)
    flow.requires_grad_(True)
    out = resample2d_reference(input, flow)
    (out * got['grad_output']).sum().backward()
    assert torch.equal(got['out'], out) and torch.equal(got['grad_input'], input.grad)
    assert torch.equal(got['grad_flow'], flow.grad)
    assert got['grad_flow'][0, 0, 5, 7] == 0 and got['grad_flow'][0, 1, 9, 20] == 0
    # And against the float64 naive loop at position -1 (the first column / row).
    naive_flow = got['flow'].double().clone()
    naive_flow[0, 0, 5, 7] = -1 - 7
    naive_flow[0, 1, 9, 20] = -1 - 9
    expected_grad_input, _ = naive_gradients(got['input'], naive_flow, got['grad_output'])
    torch.testing.assert_close(got['out'].double(), naive_resample2d(got['input'], naive_flow), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got['grad_input'].double(), expected_grad_input, rtol=1e-5, atol=1e-5)


def grid_sample_of_the_formula(input, flow):
    """resample2d_reference before non-finite flows were handled: the grid of the formula straight into
    grid_sample; finite flows must give the same bits through resample2d."""
    n, _, h, w = input.shape
    ys = torch.arange(h, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype).view(1, 1, w)
    grid = torch.stack((2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0, 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0),
                       dim=-1)
    return torch.nn.functional.grid_sample(input, grid, mode='bilinear', padding_mode='border', align_corners=True)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_finite_flows_give_the_same_bits_as_before(dtype):
    input, flow = random_case(2, 5, 16, 32, reach=40.0, seed=61, dtype=dtype)
    flow[0, :, 3, 4] = 1e30  # huge and infinite flows are unchanged too
    flow[1, 0, 2, 2], flow[1, 1, 7, 9] = float('inf'), -float('inf')
    grad_output = torch.randn(2, 5, 16, 32, generator=torch.Generator().manual_seed(62), dtype=dtype)
    results = []
    for warp in (grid_sample_of_the_formula, lambda i, f: resample2d(i, f, impl='torch')):
        i, f = input.clone().requires_grad_(True), flow.clone().requires_grad_(True)
        out = warp(i, f)
        (out * grad_output).sum().backward()
        results.append((out, i.grad, f.grad))
    for before, after in zip(*results):
        assert torch.equal(before, after)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_scatter_grad_input_reads_a_nan_flow_as_minus_inf(dtype):
    input, flow = random_case(1, 3, 5, 7, reach=3.0, seed=63, dtype=dtype)
    grad_output = torch.randn(1, 3, 5, 7, generator=torch.Generator().manual_seed(64), dtype=dtype)
    flow[0, 0, 1, 2], flow[0, 1, 3, 3] = -float('inf'), -float('inf')
    input.requires_grad_(True)
    (resample2d_reference(input, flow) * grad_output).sum().backward()
    flow[0, 0, 1, 2], flow[0, 1, 3, 3] = float('nan'), float('nan')
    got = scatter_grad_input(grad_output, flow)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, input.grad, rtol=tol, atol=tol)

def test_dispatch_cpu_uses_reference(monkeypatch):
    input, flow = random_case(1, 2, 3, 4, reach=1.0, seed=6, dtype=torch.float32)
    calls = []

    def spy(*args):
        calls.append(args)
        return resample2d_reference(*args)

    monkeypatch.setattr(resample2d_module, 'resample2d_reference', spy)
    for value in ('auto', 'torch', ' Torch '):
        monkeypatch.setenv('DAVSS_RESAMPLE2D', value)
        torch.testing.assert_close(resample2d(input, flow), resample2d_reference(input, flow), rtol=0, atol=0)
    monkeypatch.delenv('DAVSS_RESAMPLE2D')
    resample2d(input, flow)
    assert len(calls) == 4


def test_dispatch_impl_argument_overrides_env(monkeypatch):
    input, flow = random_case(1, 1, 3, 3, reach=1.0, seed=7, dtype=torch.float32)
    monkeypatch.setenv('DAVSS_RESAMPLE2D', 'cuda')
    with pytest.raises(RuntimeError, match='DAVSS_RESAMPLE2D'):
        resample2d(input, flow)
    torch.testing.assert_close(resample2d(input, flow, impl='torch'), resample2d_reference(input, flow))


def test_dispatch_rejects_unknown_choice(monkeypatch):
    input, flow = random_case(1, 1, 3, 3, reach=1.0, seed=8)
    monkeypatch.setenv('DAVSS_RESAMPLE2D', 'fast')
    with pytest.raises(ValueError, match=r"DAVSS_RESAMPLE2D must be one of auto, cuda, torch, got 'fast'"):
        resample2d(input, flow)
    monkeypatch.delenv('DAVSS_RESAMPLE2D')
    with pytest.raises(ValueError, match='impl must be one of'):
        resample2d(input, flow, impl='triton')


def test_forced_cuda_without_extension_says_so(monkeypatch):
    input, flow = random_case(1, 1, 3, 3, reach=1.0, seed=9)
    monkeypatch.setattr(resample2d_module, '_EXTENSION_LOADED', False)
    monkeypatch.setattr(resample2d_module, '_EXTENSION_ERROR', 'ImportError: not built')
    expected = r'extension lib\.ops\._resample2d_cuda is not available \(ImportError: not built\)'
    with pytest.raises(RuntimeError, match=expected):
        resample2d(input, flow, impl='cuda')
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='not available'):
            resample2d(input.cuda(), flow.cuda(), impl='cuda')


def test_forced_cuda_with_cpu_tensors_says_so(monkeypatch):
    input, flow = random_case(1, 1, 3, 3, reach=1.0, seed=10)
    monkeypatch.setattr(resample2d_module, '_EXTENSION_LOADED', True)
    with pytest.raises(RuntimeError, match='input is on cpu'):
        resample2d(input, flow, impl='cuda')


@pytest.mark.parametrize('input_shape, flow_shape, error, message', [
    ((2, 3, 4), (2, 2, 4), ValueError, r'expected input \(N, C, H, W\) and flow \(N, 2, H, W\)'),
    ((1, 3, 4, 5), (1, 3, 4, 5), ValueError, r'expected input \(N, C, H, W\) and flow \(N, 2, H, W\)'),
    ((1, 3, 4, 5), (1, 2, 4, 6), ValueError, 'differ in batch or size'),
    ((2, 3, 4, 5), (1, 2, 4, 5), ValueError, 'differ in batch or size'),
])
def test_bad_shapes_give_clear_errors(input_shape, flow_shape, error, message):
    with pytest.raises(error, match=message):
        resample2d(torch.zeros(input_shape), torch.zeros(flow_shape))


def test_integer_input_is_rejected():
    with pytest.raises(TypeError, match='expected floating point input and flow'):
        resample2d(torch.zeros(1, 1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, 2))


def test_extension_is_built_where_a_toolkit_exists():
    """Fails when setup.py silently skipped the extension although it could have built it (CI has nvcc)."""
    if os.environ.get('DAVSS_BUILD_CUDA', 'auto').strip().lower() == '0':
        pytest.skip('DAVSS_BUILD_CUDA=0 disables the extension')
    blocker = cuda_toolkit.build_blocker()
    if blocker is not None:
        pytest.skip(f'the CUDA extension cannot be built here: {blocker}')
    assert cuda_extension_available(), (
        f'a CUDA toolkit ({cuda_toolkit.find_cuda_home()}) and a CUDA build of torch are present but '
        f'lib.ops._resample2d_cuda does not import ({resample2d_module._EXTENSION_ERROR}); '
        f'run `pip install --no-build-isolation -e . --config-settings editable_mode=compat`')


def test_import_without_extension_falls_back_to_reference():
    """A checkout where the extension was never built (CPU-only torch, no nvcc) must import and warp on CPU."""
    script = textwrap.dedent("""
        import sys
        class HideExtension:
            def find_spec(self, name, path=None, target=None):
                if name == 'lib.ops._resample2d_cuda':
                    raise ImportError('hidden by the test')
        sys.meta_path.insert(0, HideExtension())
        import torch
        from lib.ops import cuda_extension_available, resample2d, resample2d_reference
        assert not cuda_extension_available()
        x, f = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
        assert torch.equal(resample2d(x, f), resample2d_reference(x, f))
        try:
            resample2d(x, f, impl='cuda')
        except RuntimeError as error:
            assert 'hidden by the test' in str(error), error
        else:
            raise AssertionError('impl=cuda without the extension did not raise')
        print('ok')
    """)
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, '-c', script], cwd=repo_root, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-2000:]


@pytest.mark.skipif(not cuda_extension_available(), reason='the resample2d CUDA extension is not built')
def test_extension_operators_have_shape_functions():
    """The operators are registered and trace on meta tensors (what torch.compile needs), without a GPU."""
    input = torch.empty(2, 3, 5, 7, device='meta', dtype=torch.float16)
    flow = torch.empty(2, 2, 5, 7, device='meta')
    assert torch.ops.davss.resample2d_forward(input, flow).shape == (2, 3, 5, 7)
    grad_input, grad_flow = torch.ops.davss.resample2d_backward(input, input, flow, True, True)
    assert grad_input.shape == input.shape and grad_input.dtype == torch.float16
    assert grad_flow.shape == flow.shape and grad_flow.dtype == torch.float32


def test_naive_gradients_match_gradcheck_of_the_reference():
    """The float64 naive gradients (the host kernel test's reference) agree with autograd of the reference."""
    input, flow = random_case(2, 3, 4, 6, reach=7.0, seed=40)  # reaches past every border
    grad_output = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(41), dtype=torch.float64)
    grad_input, grad_flow = naive_gradients(input, flow, grad_output)
    input_ref, flow_ref = input.clone().requires_grad_(True), flow.clone().requires_grad_(True)
    (resample2d_reference(input_ref, flow_ref) * grad_output).sum().backward()
    torch.testing.assert_close(grad_input, input_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad_flow, flow_ref.grad, rtol=1e-6, atol=1e-6)
    assert (grad_flow == 0).any() and (grad_flow != 0).any()  # clamped (outside) and inside positions both seen


# --- architectures of the build -----------------------------------------------------------------------------

@pytest.mark.parametrize('visible, environ, expected', [
    (0, {}, '7.5;8.0;8.6;9.0;9.0a;10.0;12.0+PTX'),  # no GPU, where torch's default fails: everything torch supports
    (2, {}, None),  # torch's default: the visible GPUs
    (0, {'TORCH_CUDA_ARCH_LIST': ' 8.9 '}, '8.9'),  # the user's choice wins
    (1, {'TORCH_CUDA_ARCH_LIST': '9.0'}, '9.0'),
])
def test_arch_list_for_build(monkeypatch, visible, environ, expected):
    monkeypatch.setattr(torch.cuda, 'get_arch_list', lambda: ['sm_75', 'sm_80', 'sm_86', 'sm_90', 'sm_90a', 'sm_100',
                                                             'sm_120', 'compute_120'])
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: visible)
    assert cuda_toolkit.arch_list_for_build(environ) == expected


def test_kernel_for_picks_compatible_code():
    kernels = [('ptx', 90), ('sass', 75), ('sass', 80), ('sass', 86)]
    assert cuda_toolkit.kernel_for(86, kernels) == ('sass', 86)
    assert cuda_toolkit.kernel_for(89, kernels) == ('sass', 86)  # same major, lower minor runs
    assert cuda_toolkit.kernel_for(90, kernels) == ('ptx', 90)
    assert cuda_toolkit.kernel_for(120, kernels) == ('ptx', 90)  # PTX is compiled for newer GPUs
    assert cuda_toolkit.kernel_for(70, kernels) is None  # "no kernel image is available"
    assert cuda_toolkit.kernel_for(87, [('sass', 90)]) is None  # SASS never runs on an older GPU


def expected_build_architectures():
    """(sm numbers the build must cover, why), as setup.py chose them."""
    listed = os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip()
    if listed:
        entries = [entry.split('+')[0].rstrip('abcdefghijklmnopqrstuvwxyz') for entry in listed.replace(' ', ';')
                   .split(';') if entry and entry[0].isdigit()]
        return sorted({int(entry.replace('.', '')) for entry in entries}), f'TORCH_CUDA_ARCH_LIST={listed}'
    if torch.cuda.is_available():
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return sorted(10 * major + minor for major, minor in capabilities), 'the visible GPUs'
    archs = [arch for arch in torch.cuda.get_arch_list() if arch.startswith('sm_')]
    return sorted(int(re.sub(r'\D', '', arch)) for arch in archs), 'torch.cuda.get_arch_list()'


def built_extension_path():
    spec = importlib.util.find_spec('lib.ops._resample2d_cuda')
    if spec is None or spec.origin is None:
        blocker = cuda_toolkit.build_blocker()
        if blocker is not None or os.environ.get('DAVSS_BUILD_CUDA', 'auto').strip().lower() == '0':
            pytest.skip(f'the CUDA extension is not built here ({blocker or "DAVSS_BUILD_CUDA=0"})')
        pytest.fail('a CUDA toolkit is present but lib.ops._resample2d_cuda was not built')
    return spec.origin


def test_built_extension_has_a_kernel_for_every_architecture():
    """The .so holds SASS of the same major version (or PTX) for each architecture torch runs on (CI: wherever
    nvcc exists), so no supported GPU meets "no kernel image is available"."""
    kernels = cuda_toolkit.fatbin_kernels(built_extension_path())
    wanted, source = expected_build_architectures()
    missing = [sm for sm in wanted if cuda_toolkit.kernel_for(sm, kernels) is None]
    assert not missing, f'no kernel for sm_{missing} ({source}); the build holds {kernels}'
    if source == 'torch.cuda.get_arch_list()':
        assert ('ptx', max(wanted)) in kernels, f'no PTX of sm_{max(wanted)} for newer GPUs: {kernels}'


def find_cuobjdump():
    home = cuda_toolkit.find_cuda_home()
    candidates = [shutil.which('cuobjdump'), home and os.path.join(home, 'bin', 'cuobjdump')]
    try:
        import nvidia.cu13  # the nvidia-cuda-cuobjdump wheel's location for CUDA 13
        candidates += [os.path.join(root, 'bin', 'cuobjdump') for root in nvidia.cu13.__path__]
    except ImportError:
        pass
    try:
        import triton  # torch's CUDA builds depend on triton, which ships a cuobjdump
        candidates.append(os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump'))
    except ImportError:
        pass
    return next((path for path in candidates if path and os.path.isfile(path)), None)


def test_fatbin_reader_agrees_with_cuobjdump():
    path = built_extension_path()
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        pytest.skip('no cuobjdump (CUDA toolkit, the nvidia-cuda-cuobjdump wheel or triton) to compare with')
    listed = set()
    for flag, kind, suffix in (('--list-elf', 'sass', 'cubin'), ('--list-ptx', 'ptx', 'ptx')):
        text = subprocess.run([cuobjdump, flag, path], capture_output=True, text=True, check=True).stdout
        listed |= {(kind, int(sm)) for sm in re.findall(rf'\.sm_(\d+)[a-z]?\.{suffix}', text)}
    assert listed and sorted(listed) == cuda_toolkit.fatbin_kernels(path)


# --- falling back when the extension cannot run ------------------------------------------------------------

@pytest.fixture
def fresh_dispatch_state(monkeypatch):
    monkeypatch.setattr(resample2d_module, '_DEVICE_PROBLEMS', {})
    monkeypatch.setattr(resample2d_module, '_WARNED', set())
    monkeypatch.delenv('DAVSS_RESAMPLE2D', raising=False)


def test_auto_warns_once_and_falls_back_when_the_extension_cannot_run(monkeypatch, fresh_dispatch_state):
    no_image = 'the CUDA extension cannot run on cuda:0 (Tesla T4, sm_75): no kernel image is available'
    probes = []
    monkeypatch.setattr(resample2d_module, '_EXTENSION_LOADED', True)
    monkeypatch.setattr(resample2d_module, '_probe_extension', lambda device: probes.append(device) or no_image)
    gpu = torch.device('cuda', 0)
    with pytest.warns(RuntimeWarning) as caught:
        assert resample2d_module._use_cuda_extension(gpu, None) is False
        assert resample2d_module._use_cuda_extension(gpu, 'auto') is False
    assert len(caught) == 1 and probes == [gpu]  # one warning, one probe per device
    message = str(caught[0].message)
    assert no_image in message and 'PyTorch implementation' in message and '\n' not in message
    monkeypatch.setenv('DAVSS_RESAMPLE2D', 'cuda')
    with pytest.raises(RuntimeError, match='impl=cuda.* but the CUDA extension cannot run on cuda:0.*no kernel image'):
        resample2d_module._use_cuda_extension(gpu, None)
    assert resample2d_module._use_cuda_extension(gpu, 'torch') is False


def test_auto_uses_the_extension_when_the_probe_passes(monkeypatch, fresh_dispatch_state):
    monkeypatch.setattr(resample2d_module, '_EXTENSION_LOADED', True)
    monkeypatch.setattr(resample2d_module, '_probe_extension', lambda device: None)
    assert resample2d_module._use_cuda_extension(torch.device('cuda', 1), None) is True
    assert resample2d_module._use_cuda_extension(torch.device('cuda', 1), 'cuda') is True
    assert resample2d_module._use_cuda_extension(torch.device('cpu'), None) is False


def test_auto_warns_once_when_the_extension_is_missing_for_cuda_tensors(monkeypatch, fresh_dispatch_state):
    monkeypatch.setattr(resample2d_module, '_EXTENSION_LOADED', False)
    monkeypatch.setattr(resample2d_module, '_EXTENSION_ERROR', 'ImportError: not built')
    with pytest.warns(RuntimeWarning, match=r'not available \(ImportError: not built\).*PyTorch') as caught:
        for _ in range(3):
            assert resample2d_module._use_cuda_extension(torch.device('cuda', 0), None) is False
    assert len(caught) == 1
    with pytest.raises(RuntimeError, match='not available'):
        resample2d_module._use_cuda_extension(torch.device('cuda', 0), 'cuda')


# --- half precision in the PyTorch path ----------------------------------------------------------------------

HALF_TOLERANCES = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def devices():
    return ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.mark.parametrize('device', devices())
@pytest.mark.parametrize('flow_dtype', ['same', torch.float32])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_reference_half_precision_samples_at_float32_positions(dtype, flow_dtype, device):
    """At width 512 a half/bfloat16 grid is off by up to 0.25 px; positions must be computed in float32."""
    input, flow = random_case(1, 4, 6, 512, reach=3.0, seed=42, device=device)
    input = input.to(dtype)
    flow = flow.to(dtype if flow_dtype == 'same' else flow_dtype)
    expected = resample2d_reference(input.double(), flow.double())  # same stored values, float64 positions
    out = resample2d_reference(input, flow)
    assert out.dtype == dtype
    tol = HALF_TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_reference_half_precision_large_map_on_cpu(dtype):
    """A 19-channel 256x512 map (1/4 of 1024x2048) in half precision on CPU: finite and right, with gradients."""
    input, flow = random_case(1, 19, 256, 512, reach=5.0, seed=43, dtype=torch.float32)
    input = input.to(dtype).requires_grad_(True)
    flow.requires_grad_(True)
    out = resample2d_reference(input, flow)
    assert torch.isfinite(out).all()
    expected = resample2d_reference(input.detach().float(), flow.detach())
    tol = HALF_TOLERANCES[dtype]
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert input.grad.dtype == dtype and torch.isfinite(input.grad).all() and torch.isfinite(flow.grad).all()


# --- the deterministic backward pass -------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_scatter_grad_input_matches_autograd_of_the_reference(dtype):
    input, flow = random_case(2, 3, 5, 7, reach=9.0, seed=44, dtype=dtype)
    flow[0, :, 0, 0] = 1e30  # huge flows read the border, as in the kernel
    grad_output = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(45), dtype=dtype)
    input.requires_grad_(True)
    (resample2d_reference(input, flow) * grad_output).sum().backward()
    got = scatter_grad_input(grad_output, flow)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert got.dtype == dtype
    torch.testing.assert_close(got, input.grad, rtol=tol, atol=tol)


def test_cuda_backward_has_no_atomics_under_deterministic_algorithms():
    """Under torch.use_deterministic_algorithms the kernel is asked for grad_flow only, deterministically, and
    grad_input comes from the sorted sum; otherwise the kernel does both in one pass."""
    input, flow = random_case(1, 2, 4, 5, reach=2.0, seed=46, dtype=torch.float32)
    grad_output = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(47))
    calls = []

    def fake_backward_op(grad_output, input, flow, need_input, need_flow, deterministic):
        calls.append((need_input, need_flow, deterministic))
        return torch.full_like(input, 7.0) if need_input else input.new_empty(0), torch.full_like(flow, 3.0)

    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        grad_input, grad_flow = cuda_backward(grad_output, input, flow, True, True, backward_op=fake_backward_op)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    assert calls == [(False, True, True)]
    torch.testing.assert_close(grad_input, scatter_grad_input(grad_output, flow), rtol=0, atol=0)
    assert torch.equal(grad_flow, torch.full_like(flow, 3.0))
    grad_input, grad_flow = cuda_backward(grad_output, input, flow, True, False, backward_op=fake_backward_op)
    assert calls[-1] == (True, False, False) and grad_flow is None
    assert torch.equal(grad_input, torch.full_like(input, 7.0))


# --- the kernel's per-pixel arithmetic, compiled for the host ------------------------------------------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_TEST_SOURCE = os.path.join(REPO_ROOT, 'tests', 'csrc', 'resample2d_host_test.cpp')
HOST_DTYPES = {torch.float16: 'float16', torch.bfloat16: 'bfloat16', torch.float32: 'float32',
               torch.float64: 'float64'}
HOST_TOLERANCES = {torch.float16: 1e-3, torch.bfloat16: 8e-3, torch.float32: 2e-5, torch.float64: 1e-9}


@pytest.fixture(scope='module')
def host_program(tmp_path_factory):
    """tests/csrc/resample2d_host_test.cpp built with g++ against lib/ops/csrc/resample2d_math.h."""
    compiler = shutil.which('g++')
    if compiler is None:
        pytest.skip('g++ is not installed')
    program = str(tmp_path_factory.mktemp('host_kernel') / 'resample2d_host_test')
    command = [compiler, '-std=c++17', '-O1', '-Wall', '-Wextra', '-Werror', '-I',
               os.path.join(REPO_ROOT, 'lib', 'ops', 'csrc'), HOST_TEST_SOURCE, '-o', program]
    built = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-3000:]
    return program


def storage_bytes(tensor):
    """Raw little-endian bytes of a tensor (16-bit types as their bits)."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.view(torch.int16)
    return tensor.contiguous().numpy().tobytes()


def from_storage(data, dtype, shape):
    if dtype in (torch.float16, torch.bfloat16):
        return torch.frombuffer(bytearray(data), dtype=torch.int16).view(dtype).reshape(shape)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


@pytest.mark.parametrize('dtype', list(HOST_DTYPES))
@pytest.mark.parametrize('n, c, h, w, run', [(2, 3, 5, 7, 3), (1, 5, 6, 4, 2), (2, 4, 1, 6, 1)])
def test_host_kernel_math_matches_naive_loop(host_program, tmp_path, dtype, n, c, h, w, run):
    """The kernels' arithmetic (forward, grad_input, grad_flow; channel runs split as across CUDA blocks; flows
    reaching past the borders; 16-bit storage with float32 arithmetic) against the float64 naive loop."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    input, flow = random_case(n, c, h, w, reach=max(h, w) + 2.0, seed=48 + c)
    input, flow = input.to(dtype), flow.to(acc)  # the extension converts the flow to the arithmetic type
    grad_output = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(49), dtype=torch.float64).to(dtype)
    paths = {name: str(tmp_path / f'{name}.bin') for name in
             ('input', 'flow', 'grad_output', 'output', 'grad_input', 'grad_flow')}
    for name, tensor in (('input', input), ('flow', flow), ('grad_output', grad_output)):
        with open(paths[name], 'wb') as handle:
            handle.write(storage_bytes(tensor))
    command = [host_program, 'warp', HOST_DTYPES[dtype], str(n), str(c), str(h), str(w), str(run),
               *(paths[name] for name in ('input', 'flow', 'grad_output', 'output', 'grad_input', 'grad_flow'))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    read = {name: open(paths[name], 'rb').read() for name in ('output', 'grad_input', 'grad_flow')}
    output = from_storage(read['output'], dtype, (n, c, h, w))
    grad_input = from_storage(read['grad_input'], acc, (n, c, h, w))
    grad_flow = from_storage(read['grad_flow'], acc, (n, 2, h, w))

    expected_output = naive_resample2d(input.double(), flow.double())
    expected_grad_input, expected_grad_flow = naive_gradients(input.double(), flow.double(), grad_output.double())
    tol = HOST_TOLERANCES[dtype]
    # The output is stored in the map's dtype: one rounding of the float32 (float64) value.
    torch.testing.assert_close(output.double(), expected_output, rtol=tol, atol=tol)
    acc_tol = 1e-9 if acc == torch.float64 else 2e-5
    torch.testing.assert_close(grad_input.double(), expected_grad_input, rtol=acc_tol, atol=acc_tol)
    torch.testing.assert_close(grad_flow.double(), expected_grad_flow, rtol=1e-5, atol=max(acc_tol, 1e-6) * c)
    assert (expected_grad_flow == 0).any() and (expected_grad_flow != 0).any()



@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_host_kernel_math_reads_a_nan_flow_as_minus_inf(host_program, tmp_path, dtype):
    """The kernels' arithmetic with NaN flow components: what the PyTorch path gives, position -1 along that axis
    (first column / row), a zero flow gradient for that component, no NaN anywhere."""
    n, c, h, w = 1, 3, 5, 7
    input, flow = random_case(n, c, h, w, reach=3.0, seed=65, dtype=dtype)
    flow[0, 0, 1, 2] = flow[0, 1, 3, 3] = float('nan')
    flow[0, :, 4, 6] = float('nan')
    grad_output = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(66), dtype=dtype)
    paths = {name: str(tmp_path / f'{name}.bin') for name in
             ('input', 'flow', 'grad_output', 'output', 'grad_input', 'grad_flow')}
    for name, tensor in (('input', input), ('flow', flow), ('grad_output', grad_output)):
        with open(paths[name], 'wb') as handle:
            handle.write(storage_bytes(tensor))
    command = [host_program, 'warp', HOST_DTYPES[dtype], str(n), str(c), str(h), str(w), '2',
               *(paths[name] for name in ('input', 'flow', 'grad_output', 'output', 'grad_input', 'grad_flow'))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    output, grad_input, grad_flow = (from_storage(open(paths[name], 'rb').read(), dtype, shape) for name, shape in
                                     (('output', (n, c, h, w)), ('grad_input', (n, c, h, w)),
                                      ('grad_flow', (n, 2, h, w))))
    at_minus_one = flow.double().clone()
    xs = torch.arange(w, dtype=torch.float64).expand(n, h, w)
    ys = torch.arange(h, dtype=torch.float64).view(h, 1).expand(n, h, w)
    at_minus_one[:, 0] = torch.where(flow[:, 0].isnan(), -1 - xs, at_minus_one[:, 0])
    at_minus_one[:, 1] = torch.where(flow[:, 1].isnan(), -1 - ys, at_minus_one[:, 1])
    expected_grad_input, expected_grad_flow = naive_gradients(input.double(), at_minus_one, grad_output.double())
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(output.double(), naive_resample2d(input.double(), at_minus_one), rtol=tol, atol=tol)
    torch.testing.assert_close(grad_input.double(), expected_grad_input, rtol=tol, atol=tol)
    torch.testing.assert_close(grad_flow.double(), expected_grad_flow, rtol=1e-5, atol=1e-5)
    assert (grad_flow[flow.isnan()] == 0).all()

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_host_16bit_storage_rounds_like_torch(host_program, tmp_path, dtype):
    """The host program's float16/bfloat16 conversions (what c10::Half/BFloat16 do on the GPU): every 16-bit
    value widens exactly and narrows back to itself, and float32 values (ties, subnormals, overflow) round to
    nearest even like torch."""
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).float()
    every = every[~torch.isnan(every)]
    sorted_values = every.unique().double()
    ties = ((sorted_values[1:] + sorted_values[:-1]) / 2).float()  # exactly halfway between neighbours
    generator = torch.Generator().manual_seed(50)
    wide_range = torch.randn(20000, generator=generator) * torch.exp2(torch.randint(-30, 30, (20000,),
                                                                                       generator=generator)).float()
    values = torch.cat([every, ties, wide_range, torch.tensor([65519.0, 65520.0, 1e30, -float('inf'), 6e-8])])
    paths = [str(tmp_path / name) for name in ('values.bin', 'narrow.bin', 'wide.bin')]
    with open(paths[0], 'wb') as handle:
        handle.write(values.numpy().tobytes())
    done = subprocess.run([host_program, 'roundtrip', HOST_DTYPES[dtype], *paths], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    narrow = from_storage(open(paths[1], 'rb').read(), dtype, values.shape)
    wide = torch.frombuffer(bytearray(open(paths[2], 'rb').read()), dtype=torch.float32)
    assert torch.equal(narrow.view(torch.int16), values.to(dtype).view(torch.int16))
    assert torch.equal(wide, values.to(dtype).float())


def host_offsets(program, batch, pixel, channel, c, h, w, xf, yf):
    done = subprocess.run([program, 'offsets', *map(str, (batch, pixel, channel, c, h, w, xf, yf))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {key: float(value) if key in ('alpha', 'beta') else int(value)
            for key, value in (line.split() for line in done.stdout.splitlines())}


@pytest.mark.parametrize('h, w', [(32768, 32769), (46340, 46341)])  # H*W past 2^30, and just under 2^31
def test_host_index_math_past_int32(host_program, h, w):
    """Offsets of the last pixel of the second batch item at sizes the kernel admits but 32-bit products
    overflow (e.g. plane + pixel), against Python integers."""
    plane = h * w
    assert 2 ** 30 < plane <= 2 ** 31 - 1 - 256
    pixel, batch, channel, c = plane - 1, 1, 18, 19
    got = host_offsets(host_program, batch, pixel, channel, c, h, w, w - 0.5, h - 1.75)
    assert got['flow_dx'] == batch * 2 * plane + pixel
    assert got['flow_dy'] == batch * 2 * plane + plane + pixel
    assert got['plane'] == (batch * c + channel) * plane
    # x = W - 0.5 -> left W-1, right clamped to W-1; y = H - 1.75 -> rows H-2 and H-1.
    assert (got['top_left'], got['top_right']) == ((h - 2) * w + w - 1, (h - 2) * w + w - 1)
    assert (got['bottom_left'], got['bottom_right']) == (plane - 1, plane - 1)
    assert (got['alpha'], got['beta']) == (0.5, 0.25)


# --- CUDA extension (skipped without a GPU) --------------------------------------------------------------------

CUDA_SHAPES = [(3, 5, 7, 9), (2, 19, 32, 48), (1, 8, 425, 425), (1, 1, 736, 736)]
TOLERANCES = {torch.float32: 2e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


@needs_cuda_extension
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape', CUDA_SHAPES)
def test_cuda_forward_backward_match_reference(shape, dtype):
    n, c, h, w = shape
    input64, flow64 = random_case(n, c, h, w, reach=6.0, seed=11, device='cuda')
    weights = torch.randn(n, c, h, w, dtype=torch.float64, device='cuda')

    def warp_and_grads(implementation, input, flow):
        input = input.detach().requires_grad_(True)
        flow = flow.detach().requires_grad_(True)
        out = implementation(input, flow)
        (out.double() * weights).sum().backward()
        return out, input.grad, flow.grad

    expected = warp_and_grads(resample2d_reference, input64.to(dtype).double(), flow64)
    actual = warp_and_grads(lambda i, f: resample2d(i, f, impl='cuda'), input64.to(dtype), flow64.float())
    assert actual[0].dtype == dtype and actual[1].dtype == dtype and actual[2].dtype == torch.float32
    tol = TOLERANCES[dtype]
    for name, got, want in zip(('output', 'grad_input', 'grad_flow'), actual, expected):
        # grad_flow sums C channels of products; scale its tolerance with the channel count.
        scale = math.sqrt(c) if name == 'grad_flow' else 1.0
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale, msg=lambda m: f'{name}: {m}')


@needs_cuda_extension
def test_cuda_gradcheck_double():
    input, flow = random_case(2, 3, 4, 5, reach=2.5, seed=12, device='cuda')
    input.requires_grad_(True)
    flow.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, f: resample2d(i, f, impl='cuda'), (input, flow), eps=1e-6, atol=1e-5)


@needs_cuda_extension
def test_cuda_single_gradient_and_layouts():
    input, flow = random_case(2, 4, 6, 10, reach=3.0, seed=13, device='cuda', dtype=torch.float32)
    channels_last = input.to(memory_format=torch.channels_last).requires_grad_(True)
    out = resample2d(channels_last, flow, impl='cuda')  # flow needs no gradient
    torch.testing.assert_close(out, resample2d_reference(input, flow), rtol=1e-4, atol=1e-4)
    out.sum().backward()
    expected_input = input.clone().requires_grad_(True)
    resample2d_reference(expected_input, flow).sum().backward()
    torch.testing.assert_close(channels_last.grad, expected_input.grad, rtol=1e-4, atol=1e-4)


@needs_cuda_extension
def test_cuda_auto_dispatch_uses_extension(monkeypatch):
    def fail(*args):
        raise AssertionError('the reference was used for a CUDA tensor')

    input, flow = random_case(1, 2, 3, 4, reach=1.0, seed=14, device='cuda', dtype=torch.float32)
    assert resample2d_module.extension_problem(input.device) is None  # the one-time probe uses the reference
    monkeypatch.setattr(resample2d_module, 'resample2d_reference', fail)
    monkeypatch.setenv('DAVSS_RESAMPLE2D', 'auto')
    assert resample2d(input, flow).shape == input.shape


@needs_cuda_extension
def test_cuda_huge_and_nan_flows():
    input, _ = random_case(1, 2, 3, 4, reach=0, seed=15, device='cuda', dtype=torch.float32)
    flow = torch.full((1, 2, 3, 4), 1e30, device='cuda')
    flow[0, :, 0, 0] = -float('inf')
    flow[0, 0, 1, 1] = float('nan')  # reads like -inf: the first column (of the last row: dy = 1e30)
    input.requires_grad_(True)
    flow.requires_grad_(True)
    out = resample2d(input, flow, impl='cuda')
    expected = input.detach()[:, :, -1:, -1:].expand_as(input).clone()
    expected[:, :, 0, 0] = input.detach()[:, :, 0, 0]
    expected[:, :, 1, 1] = input.detach()[:, :, -1, 0]
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=0)
    out.sum().backward()
    assert torch.isfinite(input.grad).all() and torch.equal(flow.grad, torch.zeros_like(flow))


@needs_cuda_extension
def test_cuda_probe_passes_and_auto_falls_back_when_it_fails(monkeypatch, fresh_dispatch_state):
    device = torch.device('cuda', torch.cuda.current_device())
    assert resample2d_module._probe_extension(device) is None  # the build has code for this GPU, and it agrees
    input, flow = random_case(1, 2, 5, 6, reach=2.0, seed=16, device='cuda', dtype=torch.float32)
    monkeypatch.setattr(resample2d_module, '_probe_extension', lambda device: 'simulated: no kernel image')
    with pytest.warns(RuntimeWarning, match='simulated: no kernel image'):
        out = resample2d(input, flow)
    assert torch.equal(out, resample2d_reference(input, flow))
    with pytest.raises(RuntimeError, match='simulated: no kernel image'):
        resample2d(input, flow, impl='cuda')


@needs_cuda_extension
def test_cuda_deterministic_backward_is_reproducible_and_right():
    input, flow = random_case(2, 19, 48, 80, reach=6.0, seed=17, device='cuda', dtype=torch.float32)
    weights = torch.randn(2, 19, 48, 80, device='cuda', generator=torch.Generator('cuda').manual_seed(18))

    def grads():
        x, f = input.clone().requires_grad_(True), flow.clone().requires_grad_(True)
        (resample2d(x, f, impl='cuda') * weights).sum().backward()
        return x.grad, f.grad

    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = grads(), grads()
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    expected = grads()  # the default (atomic) path, to float32 rounding
    torch.testing.assert_close(first[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first[1], expected[1], rtol=1e-4, atol=1e-4)


@needs_cuda_extension
@pytest.mark.slow
def test_cuda_plane_past_2_30_pixels():
    """H*W > 2^30: the dy flow channel and the second half of the map lie past 2^31 elements (about 40 GB)."""
    if torch.cuda.get_device_properties(0).total_memory < 48 * 2 ** 30:
        pytest.skip('needs a GPU with at least 48 GB')
    h, w = 32768, 32769
    generator = torch.Generator('cuda').manual_seed(19)
    input = torch.rand(1, 1, h, w, device='cuda', generator=generator).half()
    flow = torch.rand(1, 2, h, w, device='cuda', generator=generator) * 6 - 3
    flow.requires_grad_(True)
    out = resample2d(input, flow, impl='cuda')
    out.float().sum().backward()
    pixels = [(0, 0), (h // 2, w - 1), (h - 1, 0), (h - 1, w - 1), (h - 2, w // 3)]
    for y, x in pixels:
        patch_y, patch_x = max(y - 4, 0), max(x - 4, 0)
        patch = input[0, :, patch_y:y + 5, patch_x:x + 5].double().cpu()
        f = flow.detach()[0, :, y, x].double().cpu()
        # Flows reach 3 px, so the 9x9 patch holds every corner (clamped at the map's border, as the patch is).
        expected = naive_sample(patch, x - patch_x + float(f[0]), y - patch_y + float(f[1]))
        torch.testing.assert_close(out[0, :, y, x].double().cpu(), expected, rtol=2e-3, atol=2e-3)
        xf, yf, eps = x - patch_x + float(f[0]), y - patch_y + float(f[1]), 1e-4
        expected_grad = torch.stack([(naive_sample(patch, xf + eps, yf) - naive_sample(patch, xf - eps, yf)).sum(),
                                     (naive_sample(patch, xf, yf + eps) - naive_sample(patch, xf, yf - eps)).sum()])
        torch.testing.assert_close(flow.grad[0, :, y, x].double().cpu(), expected_grad / (2 * eps),
                                   rtol=1e-3, atol=1e-3)
