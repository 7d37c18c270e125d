"""Every check of the CUDA path on this machine's GPUs, in one report (JSON + markdown).

Usually run through tools/gpu_check.sh (``make gpu-check``), whose --help describes the steps and the report.
"""
import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from lib.ops import cuda_extension_available, cuda_toolkit
from lib.ops.resample2d import extension_problem
from lib.utils import cli
from lib.utils.atomic import write_json, write_text
from lib.utils.config import REPO_ROOT, STAGES
from lib.utils.errors import UserError
from lib.utils.outputs import StagedFolder

STEPS = ('environment', 'cuda_tests', 'suite', 'ddp_syncbn', 'amp', 'fast_cuda_graphs', 'benchmark')
# Small and quick: the AMP steps check that training runs, not what it learns.
DATA_OPTS = ('data.num_workers=0', 'data.crop_size=null', 'train.val_every=0', 'train.log_every=1',
             'train.batch_size=2', 'model.deeplab.width_mult=0.25', 'model.deeplab.middle_blocks=1',
             'model.flownet.width_mult=0.25', 'model.cfnet.width_mult=0.25', 'seed=0', 'device=cuda')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--output', default=os.path.join(REPO_ROOT, 'result', 'gpu_check'),
                        help='report folder (default: result/gpu_check)')
    parser.add_argument('--skip', nargs='*', default=[], choices=STEPS, help='steps to leave out')
    parser.add_argument('--amp', nargs='+', default=['fp16', 'bf16'], choices=('fp16', 'bf16'))
    parser.add_argument('--step-timeout', type=float, default=3600, help='seconds per step before it fails')
    return parser.parse_args(argv)


class Runner:
    """Runs commands as steps, logging each into ``<out_dir>/logs/<step>.log``."""

    def __init__(self, out_dir, timeout):
        self.out_dir, self.timeout, self.steps = out_dir, timeout, []
        self.env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        os.makedirs(os.path.join(out_dir, 'logs'), exist_ok=True)

    def record(self, name, status, seconds=0.0, detail='', **figures):
        self.steps.append({'step': name, 'status': status, 'seconds': round(seconds, 1), 'detail': detail, **figures})
        print(f'[gpu_check] {name}: {status}{" - " + detail if detail else ""}', file=sys.stderr, flush=True)
        return self.steps[-1]

    def run(self, name, command):
        """Run ``command`` from the repository root: (return code or None on timeout, output, seconds, last line)."""
        print(f'[gpu_check] {name}: {" ".join(command)}', file=sys.stderr, flush=True)
        start = time.time()
        try:
            done = subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout)
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as error:
            code, output = None, f'{error.stdout or ""}{error.stderr or ""}\ntimed out after {self.timeout} s'
        write_text(os.path.join(self.out_dir, 'logs', f'{name}.log'), output)
        lines = [line for line in output.splitlines() if line.strip()]
        return code, output, time.time() - start, lines[-1][-300:] if lines else ''


def step_environment(runner):
    start = time.time()
    gpus = [{'index': i, 'name': torch.cuda.get_device_name(i),
             'capability': 'sm_%d%d' % torch.cuda.get_device_capability(i),
             'memory_gib': round(torch.cuda.get_device_properties(i).total_memory / 2 ** 30, 1)}
            for i in range(torch.cuda.device_count())]
    info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'torch_arch_list': torch.cuda.get_arch_list(),
            'gpus': gpus, 'extension_built': cuda_extension_available()}
    if not info['extension_built']:
        why = cuda_toolkit.build_blocker() or 'see the output of make setup'
        return runner.record('environment', 'fail', time.time() - start,
                             f'the resample2d extension is not built: {why}', **info)
    kernels = cuda_toolkit.fatbin_kernels(importlib.util.find_spec('lib.ops._resample2d_cuda').origin)
    info['extension_kernels'] = [f'{kind}:sm_{sm}' for kind, sm in kernels]
    for gpu in gpus:
        chosen = cuda_toolkit.kernel_for(int(gpu['capability'][3:]), kernels)
        gpu['kernel'] = chosen and f'{chosen[0]}:sm_{chosen[1]}'
        gpu['probe'] = extension_problem(torch.device('cuda', gpu['index'])) or 'ok'
    problems = [gpu['probe'] for gpu in gpus if gpu['probe'] != 'ok']
    return runner.record('environment', 'fail' if problems else 'pass', time.time() - start, '; '.join(problems),
                         **info)


def step_pytest(runner, name, paths, require_cuda):
    code, output, seconds, last = runner.run(name, [sys.executable, '-m', 'pytest', *paths, '-q', '-rs'])
    # A CUDA test skipped on a GPU machine means the GPU path did not run (a GPU too small for one test is fine).
    skipped_cuda = [line for line in output.splitlines() if line.startswith('SKIPPED')
                    and any(reason in line for reason in ('needs a CUDA device', 'extension is not built'))]
    failed = code != 0 or (require_cuda and skipped_cuda)
    detail = last + (f'; {len(skipped_cuda)} CUDA skip line(s)' if skipped_cuda else '')
    return runner.record(name, 'fail' if failed else 'pass', seconds, detail, skipped_cuda=skipped_cuda)


def make_data(runner, work):
    """A tiny synthetic set for the training steps: their ``--opts``, or None (a failed step) when it fails."""
    root = os.path.join(work, 'synthetic')
    code, _, _, last = runner.run('make_synthetic', [sys.executable, 'tools/make_synthetic.py', '--root', root,
                                                     '--size', '64', '128', '--train', '2', '--val', '1'])
    if code != 0:
        runner.record('make_synthetic', 'fail', detail=f'no data for the training steps: {last}')
        return None
    return [f'data.root={root}', f'data.train_list={root}/list/train.txt', f'data.val_list={root}/list/val.txt']


def train_command(stage, opts, launcher=(sys.executable,)):
    return [*launcher, 'tools/train.py', os.path.join('exp', 'synthetic', f'{stage}.yaml'), '--opts', *opts]


def step_ddp(runner, data, work):
    if torch.cuda.device_count() < 2:
        return runner.record('ddp_syncbn', 'skip', detail=f'{torch.cuda.device_count()} GPU(s); needs 2')
    opts = [*DATA_OPTS, *data, f'train.save_root={work}/ddp', 'train.max_iters=2', 'experiment=ddp_segmentation']
    launcher = (sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
    code, output, seconds, last = runner.run('ddp_syncbn', train_command('segmentation', opts, launcher))
    ok = code == 0 and 'on 2 process(es), device cuda' in output  # the engine's header line
    return runner.record('ddp_syncbn', 'pass' if ok else 'fail', seconds, last)


def step_amp(runner, data, work, dtype):
    """One AMP step of each stage, chained as exp/synthetic: dmnet and correction from the earlier stages."""
    saved = os.path.join(work, f'amp_{dtype}')
    frozen = [f'init.deeplab={saved}/segmentation/final.pth', f'init.flownet={saved}/flow/final.pth']
    inits = {'segmentation': [], 'flow': [], 'dmnet': frozen,
             'correction': [*frozen, f'init.dmnet={saved}/dmnet/final.pth']}
    for stage in STAGES:
        opts = [*DATA_OPTS, *data, *inits[stage], f'train.amp={dtype}', 'train.max_iters=1',
                f'train.save_root={saved}', f'experiment={stage}']
        code, _, seconds, last = runner.run(f'amp_{dtype}_{stage}', train_command(stage, opts))
        ok = code == 0 and os.path.isfile(os.path.join(saved, stage, 'final.pth'))
        runner.record(f'amp_{dtype}_{stage}', 'pass' if ok else 'fail', seconds, last)


def benchmark_figures(path):
    """The figures the report quotes from a tools/benchmark.py JSON (whatever of them it holds)."""
    with open(path) as handle:
        result = json.load(handle)
    keys = ('impl', 'channels', 'size', 'latency_ms', 'achieved_gb_per_s', 'fraction_of_copy_bandwidth')
    return {'machine': result.get('machine'), 'copy_gb_per_s': (result.get('copy_bandwidth') or {}).get('gb_per_s'),
            'resample2d': [{key: row.get(key) for key in keys} for row in result.get('resample2d', [])],
            'fast_vs_fp32': [{'size': entry.get('size'),
                              **{k: v for k, v in entry.get('comparisons', {}).items() if k.startswith('fast_speedup')},
                              'min_agreement': (entry.get('agreement') or {}).get('fast_vs_exact', {}).get('min')}
                             for entry in result.get('sizes', [])]}


def step_benchmark(runner, name, extra):
    out = os.path.join(runner.out_dir, f'{name}.json')
    code, _, seconds, last = runner.run(name, [sys.executable, 'tools/benchmark.py', '--device', 'cuda', '--fast',
                                               *extra, '--output', out])
    if code != 0 or not os.path.isfile(out):
        return runner.record(name, 'fail', seconds, last)
    return runner.record(name, 'pass', seconds, f'wrote {name}.json', figures=benchmark_figures(out))


def markdown(report):
    environment = report['environment']
    gpus = ', '.join(f'{g["name"]} ({g["capability"]}, {g["memory_gib"]} GiB, kernel {g.get("kernel")}, probe '
                     f'{g.get("probe")})' for g in environment.get('gpus', []))
    lines = [f'# GPU check: {report["summary"]}', '',
             f'{report["date"]}; torch {environment.get("torch")}, CUDA {environment.get("cuda")}; GPUs: {gpus}', '',
             f'Extension kernels: {", ".join(environment.get("extension_kernels", [])) or "none"}', '',
             '| step | status | seconds | detail |', '|---|---|---:|---|']
    for step in report['steps']:
        detail = step['detail'].replace('|', '\\|')
        lines.append(f'| {step["step"]} | {step["status"]} | {step["seconds"]} | {detail} |')
    for step in (s for s in report['steps'] if s.get('figures')):
        figures = step['figures']
        lines += ['', f'## {step["step"]} ({figures.get("machine")}; copy {figures.get("copy_gb_per_s")} GB/s)', '',
                  '| resample2d | C | size | ms | GB/s | fraction of copy |', '|---|---:|---|---:|---:|---:|']
        lines += [f'| {r["impl"]} | {r["channels"]} | {r["size"]} | {r["latency_ms"]:.3f} | '
                  f'{r["achieved_gb_per_s"]:.1f} | {r["fraction_of_copy_bandwidth"]:.2f} |'
                  for r in figures['resample2d']]
        lines += ['', 'Fast path against fp32: ' + json.dumps(figures['fast_vs_fp32'])]
    return '\n'.join(lines) + '\n'


def main(args):
    if not torch.cuda.is_available():
        raise UserError(f'needs a CUDA GPU (torch {torch.__version__} sees none on this machine); nothing was run')
    skip = set(args.skip)
    with StagedFolder(args.output, 'gpu check', '--output', overwrite=True) as folder:
        runner = Runner(folder.partial, args.step_timeout)
        environment = step_environment(runner) if 'environment' not in skip else {}
        if 'cuda_tests' not in skip:
            step_pytest(runner, 'cuda_tests', ['tests/test_ops_resample2d.py'], require_cuda=True)
        if 'suite' not in skip:
            step_pytest(runner, 'suite', [], require_cuda=False)
        if not {'ddp_syncbn', 'amp'} <= skip:
            with tempfile.TemporaryDirectory(prefix='davss_gpu_check_') as work:
                data = make_data(runner, work)
                if data is not None and 'ddp_syncbn' not in skip:
                    step_ddp(runner, data, work)
                for dtype in (args.amp if data is not None and 'amp' not in skip else ()):
                    step_amp(runner, data, work, dtype)
        if 'fast_cuda_graphs' not in skip:
            step_benchmark(runner, 'fast_cuda_graphs', ['--fast-cuda-graphs', '--sizes', '512x1024'])
        if 'benchmark' not in skip:
            step_benchmark(runner, 'benchmark', [])
        failed = [step['step'] for step in runner.steps if step['status'] == 'fail']
        report = {'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                  'summary': f'{len(failed)} failed' + (f' ({", ".join(failed)})' if failed else ', all passed'),
                  'environment': {k: v for k, v in environment.items() if k not in ('step', 'status', 'seconds')},
                  'steps': runner.steps}
        write_json(folder.file('report.json'), report, indent=2, default=str)
        write_text(folder.file('report.md'), markdown(report))
        folder.commit()
    print(f'[gpu_check] {report["summary"]}; report in {args.output}/report.md', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    cli.run(main, parse_args())
