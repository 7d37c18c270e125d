"""The whole DAVSS pipeline on synthetic street video, on the CPU, with one command (``make demo``).

    python3 tools/demo.py                 # generate data, train the 4 stages, PDA table, pictures
    python3 tools/demo.py --force         # redo every step
    python3 tools/demo.py --quick --root data/q --save-root saved_model/q --result-root result/q   # seconds, for CI

Steps, in order (docs/demo.md); each is skipped when its output exists (``--force`` redoes them all):

1. ``data``: the synthetic set (:func:`lib.synthetic.generate`) in ``--root``;
2. ``segmentation``, ``flow``, ``dmnet``, ``correction``: ``exp/synthetic/<stage>.yaml`` through the training
   engine, each writing ``<save root>/synthetic_<stage>/final.pth``, the ``init`` of the next;
3. ``pda``: the PDA evaluation of the val split -> ``<result root>/synthetic/pda.json``, ``pda.md``, ``pda.png``;
4. ``tradeoff``: mIoU against GFLOPs, ms and temporal consistency of per-frame DeepLab, propagation only and DAVSS,
   a key frame every k = 1..10 frames, and the fastest inference path -> ``tradeoff.json`` and ``tradeoff.png``;
5. ``show``: pictures of the propagation -> ``<result root>/synthetic/show/clip<i>_d9.png`` (and GIFs).

The steps call the library behind the tools in this process, so torch is imported once and the thread count set
here holds.
"""
import argparse
import json
import os
import time

import torch

from lib import synthetic
from lib.dataset.synthetic_layout import META_FILE
from lib.eval import jobs, keyframe_policies, show
from lib.train import engine
from lib.utils import cli, distributed
from lib.utils.atomic import write_json
from lib.utils.config import REPO_ROOT, load_config, resolve_path
from lib.utils.errors import UserError

STAGES = ('segmentation', 'flow', 'dmnet', 'correction')
EXPERIMENT_DIR = os.path.join('exp', 'synthetic')
EVAL_CONFIG = os.path.join(EXPERIMENT_DIR, 'correction.yaml')  # the whole SCNet; its eval: section
RESULT_NAME = 'synthetic'
SHOW_DISTANCE = 9
# The tradeoff picture: a key frame every k = 1..10 frames; the paper's PDA protocol (a key frame, then the
# distances d = 1..9) is a key frame every 10 frames, the point marked on the picture.
TRADEOFF_INTERVALS = tuple(range(2, 11))
PAPER_SETTING = 'fixed:10'
# The inference paths the tradeoff step times against the exact one; the fastest that keeps the labels is deployed.
DEPLOY_PATHS = ('fast', 'compile', 'onnxruntime')

# The demo's synthetic set (docs/demo.md: why these values); the size must match exp/synthetic's data.crop_size.
DATASET = {'size': (128, 256), 'n_train': 24, 'n_val': 8, 'seed': 0, 'n_frames': 30, 'labelled_frame': 19}
# --difficulty: (generator preset, its overrides, [STEP:]KEY=VALUE put before --opts).  'medium' through a longer lens:
# thin objects twice as large, as a 1/4-resolution network needs.  On the slow 'cityscapes-like' video the paper's lr
# for FlowNetS in the correction stage drags the flow off the true motion; 1e-6 keeps it.
DIFFICULTIES = {'medium': ('medium', {'focal': 1.6}, ()),
                'cityscapes-like': ('cityscapes-like', {}, ('correction:train.lr=1e-6',))}
SHOW_CLIPS = (0, 1, 2)

# --quick: the same chain on a toy problem (tiny frames, tiny networks, 2 iterations per stage), for the tests.
QUICK_DATASET = {'size': (32, 64), 'n_train': 2, 'n_val': 1, 'seed': 0, 'difficulty': ('medium', {}), 'n_frames': 12,
                 'labelled_frame': 10}
QUICK_OPTS = ('model.deeplab.width_mult=0.125', 'model.deeplab.middle_blocks=1', 'model.flownet.width_mult=0.125',
              'model.cfnet.width_mult=0.125', 'data.crop_size=null', 'data.scale_range=[1.0,1.0]',
              'data.num_workers=0', 'train.max_iters=2', 'train.batch_size=2', 'train.val_batch_size=1',
              'train.val_every=1', 'train.val_max_clips=4', 'train.log_every=1', 'train.channels_last=false')
QUICK_SHOW_CLIPS = (0,)
QUICK_DEPLOY_PATHS = ('fast',)  # torch.compile and the onnxruntime export take longer than the rest of --quick


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='The whole DAVSS pipeline on synthetic video (CPU is enough). '
                                                 'Relative paths are taken from the repository root.',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--difficulty', default='medium', choices=sorted(DIFFICULTIES),
                        help='the synthetic video (cityscapes-like: less motion, folders of its own)')
    parser.add_argument('--root', default=None, help='dataset folder (default $SYNTHETIC_ROOT, data/synthetic)')
    parser.add_argument('--save-root', default=None, help='checkpoint root (default $SAVE_ROOT, saved_model)')
    parser.add_argument('--result-root', default=None, help='PDA and pictures root (default $RESULT_ROOT, result)')
    parser.add_argument('--force', action='store_true', help='redo every step, even those whose outputs exist')
    parser.add_argument('--quick', action='store_true', help='toy sizes, 2 iterations per stage: the chain in seconds')
    parser.add_argument('--threads', type=cli.positive_int, default=None,
                        help='torch CPU threads (default: OMP_NUM_THREADS, else the usable CPUs; 1 with --quick)')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='[STEP:]KEY=VALUE',
                        help='config overrides of every stage, or of one step with a prefix: train.max_iters=50 '
                             'correction:train.cfnet_lr=2e-3 pda:eval.max_clips=4 (pda: also applies to tradeoff '
                             'and show)')
    args = parser.parse_args(argv)
    # Options first, then the environment, then the difficulty's own default folder.
    suffix = '' if args.difficulty == 'medium' else f'_{args.difficulty}'
    args.root = args.root or os.environ.get('SYNTHETIC_ROOT') or f'data/synthetic{suffix}'
    args.save_root = args.save_root or os.environ.get('SAVE_ROOT') or (
        'saved_model' if not suffix else f'saved_model/{args.difficulty}')
    args.result_root = args.result_root or os.environ.get('RESULT_ROOT') or 'result'
    args.result_name = RESULT_NAME + suffix
    return args


def point_configs_at(args):
    """The synthetic configs name their folders through SYNTHETIC_ROOT / SAVE_ROOT / RESULT_ROOT (lib/utils/config.py);
    the variables of the real datasets (CITYSCAPES_ROOT, CAMVID_ROOT) are never read."""
    for name, path in (('SYNTHETIC_ROOT', args.root), ('SAVE_ROOT', args.save_root), ('TBLOG_ROOT', args.save_root),
                       ('RESULT_ROOT', args.result_root)):
        os.environ[name] = resolve_path(path)


def split_step_opts(opts):
    """``['a=1', 'flow:b=2']`` -> ``{step: [overrides]}``: unprefixed ones go to every step."""
    by_step = {step: [] for step in STAGES + ('pda',)}
    for text in opts:
        prefix, _, rest = text.partition(':')
        if rest and prefix in by_step:
            by_step[prefix].append(rest)
        elif rest and '=' not in prefix:
            raise UserError(f'--opts: unknown step "{prefix}" in "{text}" (expected one of {" | ".join(by_step)})')
        else:
            for overrides in by_step.values():
                overrides.append(text)
    return by_step


class Demo:
    """The steps, each ``(name, its output, the work)``, run in order by :meth:`run`."""

    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.step_opts = split_step_opts(list(DIFFICULTIES[args.difficulty][2]) + args.opts)
        self.dataset = QUICK_DATASET if args.quick else dict(DATASET, difficulty=DIFFICULTIES[args.difficulty][:2])
        self.show_clips = QUICK_SHOW_CLIPS if args.quick else SHOW_CLIPS
        self.results = os.path.join(resolve_path(args.result_root), args.result_name)
        self.eval_config = os.path.join(REPO_ROOT, EVAL_CONFIG)
        self.timings = {}

    def opts_of(self, step):
        return list(QUICK_OPTS if self.quick else ()) + self.step_opts[step]

    def stage_config(self, stage):
        return load_config(os.path.join(REPO_ROOT, EXPERIMENT_DIR, f'{stage}.yaml'), self.opts_of(stage))

    def final_checkpoint(self, stage):
        cfg = self.stage_config(stage)
        return os.path.join(resolve_path(cfg['train']['save_root']), cfg['experiment'], 'final.pth')

    def steps(self):
        root = resolve_path(self.args.root)
        preset, overrides = self.dataset['difficulty']
        data = dict(self.dataset, size=tuple(self.dataset['size']),
                    difficulty=synthetic.difficulty_with(preset, **overrides))
        yield 'data', os.path.join(root, META_FILE), lambda: synthetic.generate(root, progress=True, **data)
        for stage in STAGES:
            # The demo owns its stage folders: a step that runs replaces that stage's earlier run.
            yield stage, self.final_checkpoint(stage), lambda stage=stage: engine.main(self.stage_config(stage),
                                                                                     overwrite=True)
        checkpoint = self.final_checkpoint('correction')
        opts = self.opts_of('pda')
        yield 'pda', os.path.join(self.results, 'pda.json'), lambda: jobs.run_pda(
            jobs.PDARun(self.eval_config, checkpoint, opts, output=self.results))
        max_clips = load_config(self.eval_config, opts)['eval']['max_clips']
        yield 'tradeoff', os.path.join(self.results, 'tradeoff.json'), lambda: keyframe_policies.run_keyframe_policies(
            keyframe_policies.KeyframeRun(self.eval_config, checkpoint, opts, max_clips=max_clips,
                                          intervals=TRADEOFF_INTERVALS, out=self.results, name='tradeoff',
                                          mark=PAPER_SETTING, timing_repeats=3 if self.quick else 10,
                                          paths=QUICK_DEPLOY_PATHS if self.quick else DEPLOY_PATHS))
        yield 'show', self.show_pictures()[-1], lambda: show.run_show(
            show.ShowRun(self.eval_config, checkpoint, opts, clips=self.show_clips, distance=SHOW_DISTANCE,
                         output=os.path.dirname(self.show_pictures()[0])))

    def show_pictures(self):
        return [os.path.join(self.results, 'show', f'clip{i}_d{SHOW_DISTANCE}.png') for i in self.show_clips]

    def run(self):
        steps = list(self.steps())
        for number, (name, output, work) in enumerate(steps, 1):
            if os.path.exists(output) and not self.args.force:
                print(f'\n[{number}/{len(steps)}] {name}: skipped, {shown(output)} exists (--force redoes it)')
                continue
            print(f'\n[{number}/{len(steps)}] {name}: writing {shown(output)}', flush=True)
            start = time.perf_counter()
            try:
                work()
            except UserError as err:
                raise UserError(f'{name}: {err}') from None
            finally:
                distributed.cleanup_distributed()
            self.timings[name] = round(time.perf_counter() - start, 1)
            print(f'[{name}] done in {self.timings[name]:.1f} s', flush=True)


def shown(path):
    """A path as the user reads it: relative inside the repository, absolute outside."""
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith('..') else relative


# ------------------------------------------------------------------------------------------------------- report
def percent(value):
    return '   -' if value is None else f'{100 * value:5.1f}'


def summary_table(result):
    """Rows per-frame / propagation only / DAVSS, one column per distance (mIoU in %)."""
    distances, per_frame, prop = result['distances'], result.get('per_frame'), result.get('propagation_only')
    rows = [('per-frame (key network on t)', per_frame and [per_frame['miou']] * len(distances)),
            ('propagation only (DFF-style)', prop and prop['miou']), ('DAVSS (corrected)', result['davss']['miou'])]
    lines = [f'{"mIoU (%) at distance d":30s}' + ''.join(f'{d:>7d}' for d in distances)]
    lines += [f'{name:30s}' + ''.join(f'{percent(v):>7s}' for v in values) for name, values in rows if values]
    return '\n'.join(lines)


def recovery_line(result):
    """How much of propagation's loss at the largest distance DAVSS wins back."""
    if not (result.get('per_frame') and result.get('propagation_only')):
        return None
    upper, prop = result['per_frame']['miou'], result['propagation_only']['miou'][-1]
    davss = result['davss']['miou'][-1]
    if None in (upper, prop, davss):
        return None
    loss = upper - prop
    share = f'{100 * (davss - prop) / loss:.0f}%' if loss > 0 else 'n/a (no loss)'
    return (f'at d={result["distances"][-1]}: propagation loses {100 * loss:.1f} points to the per-frame network; '
            f'DAVSS wins back {100 * (davss - prop):.1f} of them ({share})')


def cost_lines(tradeoff):
    """What a non-key step costs against a key step, and what each key-frame interval buys."""
    costs = tradeoff['step_costs']
    size = 'x'.join(map(str, tradeoff['frame_size']))
    lines = [f'cost at {size}, {tradeoff["threads"]} thread(s): key step (DeepLab) {costs["key"]["gflops"]:.3f} '
             f'GFLOPs, {costs["key"]["ms"]:.1f} ms; non-key step (flow, warp, DMNet, CFNet) '
             f'{costs["nonkey"]["gflops"]:.3f} GFLOPs, {costs["nonkey"]["ms"]:.1f} ms',
             f'non-key / key: {100 * tradeoff["non_key_over_key_flops"]:.1f}% of the FLOPs, '
             f'{100 * tradeoff["non_key_over_key_ms"]:.1f}% of the time '
             "(the paper's networks: 14% of the FLOPs, counted the same way)",
             f'{"key frame every k":30s}' + ''.join(f'{k:>7d}' for k in (1,) + TRADEOFF_INTERVALS)]
    for name, label in (('fixed', 'DAVSS mIoU (%)'), ('propagation', 'propagation only mIoU (%)')):
        lines.append(f'{label:30s}' + ''.join(f'{percent(r["miou"]):>7s}' for r in tradeoff[name]))
    lines.append(f'{"DAVSS GFLOPs per frame":30s}' + ''.join(f'{r["gflops_per_frame"]:7.3f}'
                                                              for r in tradeoff['fixed']))
    lines.append(f'{"DAVSS ms per frame":30s}' + ''.join(f'{r["ms_per_frame"]:7.1f}' for r in tradeoff['fixed']))
    lines += tc_lines(tradeoff) + ['\n' + '\n'.join(keyframe_policies.path_lines(tradeoff['paths']))]
    verdict = tradeoff['verdict']
    if verdict['compared']:
        lines.append(f'distortion-triggered key frames vs fixed intervals at equal cost: better in '
                     f'{verdict["better"]} of {verdict["compared"]} settings, mean '
                     f'{100 * verdict["mean_delta_miou"]:+.2f} mIoU points')
    return lines


def tc_lines(tradeoff):
    """mIoU and temporal consistency of each row at the paper's setting, the ground truth's TC as the ceiling."""
    at_paper = {row: next(r for r in tradeoff[row] if r['policy'] == PAPER_SETTING) for row in ('fixed', 'propagation')}
    flows = list(tradeoff['tc_flows'])
    rows = [('per-frame DeepLab', tradeoff['fixed'][0]), ('propagation only', at_paper['propagation']),
            ('DAVSS', at_paper['fixed'])]
    lines = [f'\nkey frame every {PAPER_SETTING.split(":")[1]} (per-frame: every frame){"":4s}mIoU (%)' +
             ''.join(f'{"TC (%), " + flow.replace("_", "-") + " flow":>26s}' for flow in flows)]
    for name, r in rows + [('ground truth (the ceiling)', {'miou': None, 'tc': tradeoff['ground_truth_tc'] or {}})]:
        lines.append(f'{name:46s}{percent(r["miou"]):>8s}' +
                     ''.join(f'{percent(r["tc"].get(flow, {}).get("tc")):>26s}' for flow in flows))
    return lines + [f'TC: mIoU of each frame\'s labels against the previous frame\'s carried by the flow: {flow} = '
                    f'{text}' for flow, text in tradeoff['tc_flows'].items()]


def report(demo, total_seconds):
    out_dir = demo.results
    with open(os.path.join(out_dir, 'pda.json')) as f:
        result = json.load(f)
    with open(os.path.join(out_dir, 'tradeoff.json')) as f:
        tradeoff = json.load(f)
    print(f'\nPDA on the synthetic {result.get("split", "val")} split ({result["n_clips"]} clips):')
    print(summary_table(result))
    if line := recovery_line(result):
        print(line)
    print('\n' + '\n'.join(cost_lines(tradeoff)))
    print(f'\nfull table: {os.path.join(out_dir, "pda.md")}')
    print(f'pictures:   {os.path.join(out_dir, "pda.png")} (mIoU against d), '
          f'{os.path.join(out_dir, "tradeoff.png")} (mIoU against cost and TC)')
    print('            ' + '\n            '.join(demo.show_pictures()))
    timings = dict(demo.timings, total=round(total_seconds, 1), threads=torch.get_num_threads(), quick=demo.quick)
    write_json(os.path.join(out_dir, 'demo_timings.json'), timings)
    steps = ', '.join(f'{step} {seconds:.0f} s' for step, seconds in demo.timings.items()) or 'all skipped'
    print(f'time: {total_seconds:.0f} s for the steps run now ({steps})')


def main(args):
    # --quick runs inside the test suite, next to other jobs: one thread wastes no time in thread barriers.
    threads = cli.set_threads(args.threads or (1 if args.quick else None))
    point_configs_at(args)
    demo = Demo(args)
    print(f'DAVSS demo: data {os.environ["SYNTHETIC_ROOT"]}, checkpoints {os.environ["SAVE_ROOT"]}/synthetic_*, '
          f'results {demo.results}; {threads} torch thread(s){"; --quick" if args.quick else ""}', flush=True)
    start = time.perf_counter()
    demo.run()
    report(demo, time.perf_counter() - start)
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
