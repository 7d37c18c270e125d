"""The whole DAVSS pipeline on synthetic street video, on the CPU, with one command (``make demo``).

    python3 tools/demo.py                 # generate data, train the 4 stages, PDA table, pictures
    python3 tools/demo.py --force         # redo every step
    python3 tools/demo.py --redo dmnet    # redo one step (and, since their inputs change, the steps after it)
    python3 tools/demo.py --quick --root data/q --save-root saved_model/q --result-root result/q   # seconds, for CI

Steps, in order (see docs/demo.md):

1. ``data``: the synthetic set (:func:`lib.synthetic.writer.generate`) in ``--root``;
2. ``segmentation``, ``flow``, ``dmnet``, ``correction``: ``exp/synthetic/<stage>.yaml`` through the one training
   engine (``tools/train.py``), each writing ``<save root>/synthetic_<stage>/final.pth``, the ``init`` of the next;
3. ``pda``: ``tools/test_pda.py`` on the val split -> ``<result root>/synthetic/pda.json``, ``pda.md`` and
   ``pda.png`` (mIoU against the key-frame distance);
4. ``tradeoff``: ``tools/eval_keyframe_policies.py`` on the val split -> ``<result root>/synthetic/tradeoff.json``
   and ``tradeoff.png``: mIoU against GFLOPs and measured ms per frame for per-frame DeepLab, propagation only and
   DAVSS with a key frame every k = 1..10 frames, and the distortion-triggered policy;
5. ``show``: ``tools/show.py`` -> ``<result root>/synthetic/show/clip<i>_d9.png`` (and GIFs).

A step whose output exists is skipped (and says so) unless that output is older than one of its inputs, its
config changed since it was written, or ``--force`` / ``--redo`` names it.  A step that is redone first removes
its old output, so an interrupted run never leaves a stale result that looks finished.  The tools are called in
this process (the library functions behind them: ``lib.train.engine.main``, ``lib.eval.jobs.run_pda``,
``lib.eval.keyframe_policies.run_keyframe_policies``, ``lib.eval.show.run_show``), so torch is imported once and
the thread count set here holds.
"""
import argparse
import json
import math
import os
import time
from dataclasses import asdict

import torch
import yaml

from lib import synthetic
from lib.dataset.synthetic_layout import META_FILE
from lib.eval import jobs as pda_run
from lib.eval import keyframe_policies as keyframe_eval
from lib.eval import show
from lib.train import engine
from lib.utils import cli, distributed
from lib.utils.atomic import write_json
from lib.utils.config import DEFAULTS, REPO_ROOT, load_config, resolve_path
from lib.utils.errors import UserError
from lib.utils.visualize import plot_pda

STAGES = ('segmentation', 'flow', 'dmnet', 'correction')
STEPS = ('data',) + STAGES + ('pda', 'tradeoff', 'show')
EXPERIMENT_DIR = os.path.join('exp', 'synthetic')
EVAL_CONFIG = os.path.join(EXPERIMENT_DIR, 'correction.yaml')  # the whole SCNet; its eval: section
RESULT_NAME = 'synthetic'
SHOW_DISTANCE = 9
# The tradeoff picture: a key frame every k = 1..10 frames; the paper's PDA protocol (a key frame, then the
# distances d = 1..9) is a key frame every 10 frames, the point marked on the picture.
TRADEOFF_INTERVALS = tuple(range(2, 11))
PAPER_SETTING = 'fixed:10'

# The synthetic set of the demo (docs/demo.md says why these values): the frame size must match data.crop_size of
# exp/synthetic/segmentation.yaml.  The 'medium' preset seen through a longer lens (focal 1.6 image widths instead of
# 0.8): poles, signs and people are twice as large in pixels, which a network predicting at 1/4 resolution needs.
DATASET = {'size': (128, 256), 'n_train': 24, 'n_val': 8, 'seed': 0, 'difficulty': ('medium', {'focal': 1.6}),
           'n_frames': 30, 'labelled_frame': 19}
# --difficulty: (generator preset, its overrides, [STEP:]KEY=VALUE config overrides put before --opts).
# 'cityscapes-like' moves less, so that propagation loses about what it loses on Cityscapes (docs/demo.md: how it
# was calibrated).  On that slow video the correction stage's semantic fine-tuning of FlowNetS at the paper's 1e-4
# (or 1e-5) drags the flow away from the true motion (end-point error 0.056 -> 0.16 px on the 1/4 grid) and nearly
# doubles the propagation loss; 1e-6 keeps the flow of the flow stage.  Its data, checkpoints and results get their
# own default folders, so that both demos can sit side by side.
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='The whole DAVSS pipeline on synthetic video (CPU is enough). '
                                                 'Relative paths are taken from the repository root.',
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--difficulty', default='medium', choices=sorted(DIFFICULTIES),
                        help='the synthetic video: medium (default) or cityscapes-like (less motion; its default '
                             'folders are data/synthetic_cityscapes-like, saved_model/cityscapes-like and '
                             'result/.../synthetic_cityscapes-like)')
    parser.add_argument('--root', default=None,
                        help='synthetic dataset folder (default data/synthetic, or $SYNTHETIC_ROOT); a folder '
                             'holding anything the generator did not write is refused')
    parser.add_argument('--save-root', default=None,
                        help='checkpoints go to <save-root>/synthetic_<stage>/ (default saved_model, or $SAVE_ROOT)')
    parser.add_argument('--result-root', default=None,
                        help='PDA table and pictures go to <result-root>/synthetic/ (default result, or '
                             '$RESULT_ROOT)')
    parser.add_argument('--force', action='store_true', help='redo every step, even those whose outputs exist')
    parser.add_argument('--redo', nargs='+', default=[], choices=STEPS, metavar='STEP',
                        help=f'redo these steps (and the ones that depend on them): {" | ".join(STEPS)}')
    parser.add_argument('--quick', action='store_true',
                        help='toy sizes and 2 iterations per stage: checks the chain in seconds (numbers meaningless)')
    parser.add_argument('--threads', type=cli.positive_int, default=None,
                        help='torch CPU threads (default: OMP_NUM_THREADS, else the CPUs this process may use; 1 with '
                             '--quick)')
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




# ----------------------------------------------------------------------------------------------------------------
# Where things go


def point_configs_at(args):
    """The synthetic configs name their folders through SYNTHETIC_ROOT / SAVE_ROOT / RESULT_ROOT (see
    lib/utils/config.py); the variables of the real datasets (CITYSCAPES_ROOT, CAMVID_ROOT) are never read."""
    os.environ['SYNTHETIC_ROOT'] = resolve_path(args.root)
    os.environ['SAVE_ROOT'] = resolve_path(args.save_root)
    os.environ['TBLOG_ROOT'] = resolve_path(args.save_root)
    os.environ['RESULT_ROOT'] = resolve_path(args.result_root)


def stage_config_path(stage):
    return os.path.join(REPO_ROOT, EXPERIMENT_DIR, f'{stage}.yaml')


def stage_config(stage, opts):
    return load_config(stage_config_path(stage), opts)


def stage_dir(cfg):
    return os.path.join(resolve_path(cfg['train']['save_root']), cfg['experiment'])


def final_checkpoint(stage, opts):
    return os.path.join(stage_dir(stage_config(stage, opts)), 'final.pth')


def result_dir(args):
    return os.path.join(resolve_path(args.result_root), args.result_name)


# ----------------------------------------------------------------------------------------------------------------
# Is a step up to date?


def shown(path):
    """A path as the user reads it: relative inside the repository, absolute outside."""
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith('..') else relative


def mtime(path):
    return os.path.getmtime(path) if os.path.exists(path) else math.inf


def why_redo(step, output, inputs, redo, extra_reason=None):
    """None when ``output`` is up to date, else the reason to (re)make it."""
    if step in redo:
        return redo[step]
    if not os.path.exists(output):
        return f'{shown(output)} does not exist yet'
    if extra_reason:
        return extra_reason
    newer = [path for path in inputs if mtime(path) > mtime(output)]
    if newer:
        return f'{shown(newer[0])} is newer than {os.path.basename(output)}'
    return None


def generator_options(dataset):
    """Keyword arguments of :func:`lib.synthetic.writer.generate` for one of the DATASET dicts above."""
    preset, overrides = dataset['difficulty']
    return dict(dataset, size=tuple(dataset['size']), difficulty=synthetic.difficulty_with(preset, **overrides))


def dataset_mismatch(root, options):
    """Why the dataset at ``root`` is not the one ``options`` (for generate) describe (None if it is)."""
    try:
        with open(os.path.join(root, META_FILE)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return f'{META_FILE} is missing or unreadable'
    have = {'size': meta.get('size'), 'n_train': meta.get('snippets', {}).get('train'),
            'n_val': meta.get('snippets', {}).get('val'), 'seed': meta.get('seed'),
            'difficulty': meta.get('difficulty_params'), 'n_frames': meta.get('n_frames'),
            'labelled_frame': meta.get('labelled_frame')}
    # Through JSON, as the meta file went: tuples become lists.
    wanted = json.loads(json.dumps(dict(options, difficulty=asdict(options['difficulty']))))
    changed = [key for key in have if have[key] != wanted[key]]
    if changed:
        return f'it was generated with other options ({", ".join(changed)})'
    return None


def config_change(cfg, output_dir):
    """Why the config the stage ran with (``config.yaml`` next to its outputs) differs from ``cfg`` (or None)."""
    try:
        with open(os.path.join(output_dir, 'config.yaml')) as f:
            used = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return 'the config it was trained with is missing'
    # eval: only matters to the PDA step, which reads it from the config itself.  A key the schema gained after
    # the stage ran is no change when it holds the default (the behaviour the run had).
    now, then, defaults = flatten(cfg), flatten(used or {}), flatten(DEFAULTS)
    changed = sorted(key for key in now.keys() | then.keys() if not key.startswith('eval.') and
                     now.get(key) != then.get(key, defaults.get(key)))
    if changed:
        return f'its config changed ({", ".join(changed[:3])}{", ..." if len(changed) > 3 else ""})'
    return None


def flatten(tree, prefix=''):
    """``{'a': {'b': [1]}}`` -> ``{'a.b': '[1]'}`` (values as text, so that lists compare and hash)."""
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten(value, f'{name}.'))
        else:
            flat[name] = json.dumps(value)
    return flat


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


def remove(path):
    if os.path.exists(path):
        os.remove(path)


# ----------------------------------------------------------------------------------------------------------------
# Steps


class Pipeline:
    """Runs the steps in order, skipping the ones that are up to date, and keeps their timings."""

    def __init__(self, args):
        self.args = args
        self.opts = list(QUICK_OPTS if args.quick else ())
        self.step_opts = split_step_opts(list(DIFFICULTIES[args.difficulty][2]) + args.opts)
        self.dataset = QUICK_DATASET if args.quick else dict(DATASET, difficulty=DIFFICULTIES[args.difficulty][:2])
        self.show_clips = QUICK_SHOW_CLIPS if args.quick else SHOW_CLIPS
        asked = STEPS if args.force else args.redo
        self.redo = {step: 'asked to: --force / --redo' for step in asked}  # step -> why it is redone
        self.timings = {}
        self.n_done = 0

    def opts_of(self, step):
        return self.opts + self.step_opts[step]

    def announce(self, step, text):
        self.n_done += 1
        print(f'\n[{self.n_done}/{len(STEPS)}] {step}: {text}', flush=True)

    def timed(self, step, work):
        start = time.perf_counter()
        work()
        self.timings[step] = round(time.perf_counter() - start, 1)
        print(f'[{step}] done in {self.timings[step]:.1f} s', flush=True)

    def redone(self, step):
        """Everything after a redone step depends on it."""
        for later in STEPS[STEPS.index(step) + 1:]:
            self.redo.setdefault(later, f'the {step} step before it was redone')

    def data(self):
        root = resolve_path(self.args.root)
        meta = os.path.join(root, META_FILE)
        options = generator_options(self.dataset)
        reason = why_redo('data', meta, [], self.redo, dataset_mismatch(root, options))
        if reason is None:
            self.announce('data', f'skipped, {shown(root)} holds the set already')
            return
        self.announce('data', f'generating the synthetic set in {root} ({reason})')
        self.timed('data', lambda: synthetic.generate(root, workers=max(1, torch.get_num_threads()), progress=True,
                                                      **options))
        self.redone('data')

    def stage(self, stage):
        opts = self.opts_of(stage)
        cfg = stage_config(stage, opts)
        output_dir = stage_dir(cfg)
        final = os.path.join(output_dir, 'final.pth')
        inputs = [os.path.join(resolve_path(self.args.root), META_FILE)]
        inputs += [resolve_path(path) for path in cfg['init'].values() if path]
        reason = why_redo(stage, final, inputs, self.redo,
                          config_change(cfg, output_dir) if os.path.exists(final) else None)
        if reason is None:
            self.announce(stage, f'skipped, {shown(final)} exists (--redo {stage} to train again)')
            return
        self.announce(stage, f'training with {shown(stage_config_path(stage))} ({reason})')
        remove(final)
        # The demo owns its stage folders: a redone stage replaces the earlier run's outputs there.
        self.timed(stage, lambda: self.call(stage, engine.main, stage_config(stage, opts),
                                                overwrite=True))
        if not os.path.exists(final):
            raise UserError(f'{stage}: training ended without writing {final}')
        self.redone(stage)

    def evaluation(self, step, output, what, work, make_run):
        """An evaluation of the final SCNet into ``output`` (skipped when up to date); True when it ran."""
        checkpoint = final_checkpoint('correction', self.opts_of('correction'))
        reason = why_redo(step, output, [checkpoint], self.redo)
        if reason is None:
            self.announce(step, f'skipped, {shown(output)} is up to date')
            return False
        self.announce(step, f'{what} ({reason})')
        remove(output)
        run = make_run(checkpoint)
        self.timed(step, lambda: self.call(step, work, run))
        return True

    def pda(self):
        out_dir = result_dir(self.args)
        if self.evaluation('pda', os.path.join(out_dir, 'pda.json'), 'PDA evaluation on the val split',
                           pda_run.run_pda,
                           lambda checkpoint: pda_run.PDARun(os.path.join(REPO_ROOT, EVAL_CONFIG), checkpoint,
                                                             self.opts_of('pda'), output=out_dir)):
            self.redone('pda')

    def tradeoff(self):
        out_dir = result_dir(self.args)
        config = os.path.join(REPO_ROOT, EVAL_CONFIG)
        max_clips = load_config(config, self.opts_of('pda'))['eval']['max_clips']
        self.evaluation('tradeoff', os.path.join(out_dir, 'tradeoff.json'),
                        'accuracy against cost of key-frame policies on the val split',
                        keyframe_eval.run_keyframe_policies,
                        lambda checkpoint: keyframe_eval.KeyframeRun(
                            config, checkpoint, self.opts_of('pda'), max_clips=max_clips,
                            intervals=TRADEOFF_INTERVALS, out=out_dir, name='tradeoff', mark=PAPER_SETTING,
                            timing_repeats=3 if self.args.quick else 10))

    def show_outputs(self):
        folder = os.path.join(result_dir(self.args), 'show')
        return [os.path.join(folder, f'clip{i}_d{SHOW_DISTANCE}.png') for i in self.show_clips]

    def show(self):
        checkpoint = final_checkpoint('correction', self.opts_of('correction'))
        pictures = self.show_outputs()
        reasons = [why_redo('show', path, [checkpoint], self.redo) for path in pictures]
        reason = next((r for r in reasons if r), None)
        if reason is None:
            self.announce('show', f'skipped, the pictures in {shown(os.path.dirname(pictures[0]))} are up to date')
            return
        self.announce('show', f'pictures of {len(pictures)} val clips from key frame t-{SHOW_DISTANCE} ({reason})')
        for path in pictures:
            remove(path)
        run = show.ShowRun(os.path.join(REPO_ROOT, EVAL_CONFIG), checkpoint, self.opts_of('pda'),
                           clips=self.show_clips, distance=SHOW_DISTANCE, output=os.path.dirname(pictures[0]))
        self.timed('show', lambda: self.call('show', show.run_show, run))

    @staticmethod
    def call(step, work, *args, **kwargs):
        """``work(*args, **kwargs)``; its bad input stops the demo with one line naming the step."""
        try:
            work(*args, **kwargs)
        except UserError as err:
            raise UserError(f'{step}: {err}') from None
        finally:
            distributed.cleanup_distributed()

    def run(self):
        self.data()
        for stage in STAGES:
            self.stage(stage)
        self.pda()
        self.tradeoff()
        self.show()


# ----------------------------------------------------------------------------------------------------------------
# Report


def percent(value):
    return '   -' if value is None else f'{100 * value:5.1f}'


def summary_table(result):
    """Rows per-frame / propagation only / DAVSS, one column per distance (mIoU in %)."""
    distances = result['distances']
    rows = [('per-frame (key network on t)', [result['per_frame']['miou']] * len(distances)
             if result.get('per_frame') else None),
            ('propagation only (DFF-style)', result['propagation_only']['miou'] if result.get('propagation_only')
             else None),
            ('DAVSS (corrected)', result['davss']['miou'])]
    lines = [f'{"mIoU (%) at distance d":30s}' + ''.join(f'{d:>7d}' for d in distances)]
    for name, values in rows:
        if values is not None:
            lines.append(f'{name:30s}' + ''.join(f'{percent(v):>7s}' for v in values))
    return '\n'.join(lines)


def recovery_line(result):
    """How much of propagation's loss at the largest distance DAVSS wins back."""
    if not (result.get('per_frame') and result.get('propagation_only')):
        return None
    upper = result['per_frame']['miou']
    prop, davss = result['propagation_only']['miou'][-1], result['davss']['miou'][-1]
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
    verdict = tradeoff['verdict']
    if verdict['compared']:
        lines.append(f'distortion-triggered key frames vs fixed intervals at equal cost: better in '
                     f'{verdict["better"]} of {verdict["compared"]} settings, mean '
                     f'{100 * verdict["mean_delta_miou"]:+.2f} mIoU points')
    return lines


def report(pipeline, total_seconds):
    out_dir = result_dir(pipeline.args)
    with open(os.path.join(out_dir, 'pda.json')) as f:
        result = json.load(f)
    with open(os.path.join(out_dir, 'tradeoff.json')) as f:
        tradeoff = json.load(f)
    print(f'\nPDA on the synthetic {result.get("split", "val")} split ({result["n_clips"]} clips):')
    print(summary_table(result))
    line = recovery_line(result)
    if line:
        print(line)
    print('\n' + '\n'.join(cost_lines(tradeoff)))
    # Drawn from pda.json each time: a picture of the table just printed.
    plot_pda(result, os.path.join(out_dir, 'pda.png'), f'PDA on the synthetic {result.get("split", "val")} split '
                                                        f'({result["n_clips"]} clips)')
    print(f'\nfull table: {os.path.join(out_dir, "pda.md")}')
    print(f'pictures:   {os.path.join(out_dir, "pda.png")} (mIoU against d), '
          f'{os.path.join(out_dir, "tradeoff.png")} (mIoU against cost)')
    print('            ' + '\n            '.join(pipeline.show_outputs()))
    timings = dict(pipeline.timings, total=round(total_seconds, 1), threads=torch.get_num_threads(),
                   quick=pipeline.args.quick)
    write_json(os.path.join(out_dir, 'demo_timings.json'), timings)
    steps = ', '.join(f'{step} {seconds:.0f} s' for step, seconds in pipeline.timings.items()) or 'all skipped'
    print(f'time: {total_seconds:.0f} s for the steps run now ({steps})')


def main(args):
    # --quick runs inside the test suite, next to other jobs: one thread wastes no time in thread barriers.
    threads = cli.set_threads(args.threads or (1 if args.quick else None))
    point_configs_at(args)
    pipeline = Pipeline(args)
    print(f'DAVSS demo: data {os.environ["SYNTHETIC_ROOT"]}, checkpoints {os.environ["SAVE_ROOT"]}/synthetic_*, '
          f'results {result_dir(args)}; {threads} torch thread(s){"; --quick" if args.quick else ""}', flush=True)
    start = time.perf_counter()
    pipeline.run()
    report(pipeline, time.perf_counter() - start)
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
