"""Packaging: the metadata in pyproject.toml, the one version number, the optional extras imported only where they
are used, setup.py without torch, and the README's install lines in a fresh virtual environment."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import time

import pytest
import torch
from helpers import REPO_ROOT

import lib

# The README's install lines, verbatim (test_readme_gives_these_install_lines keeps the two in step).
INSTALL_ANYWHERE = 'pip install -e ".[dev]"'
INSTALL_WITH_EXTENSIONS = 'pip install --no-build-isolation -e .'
EXTRAS = {'export': ('onnx', 'onnxruntime', 'onnxscript'), 'cityscapes': ('cityscapesscripts',)}


def read(name):
    with open(os.path.join(REPO_ROOT, name), encoding='utf-8') as f:
        return f.read()


def pyproject():
    tomllib = pytest.importorskip('tomllib', reason='tomllib is in the standard library from Python 3.11')
    with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)


def requirement_names(requirements):
    return {re.split(r'[<>=!~\[; ]', requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_one_version_number():
    """``lib.__version__`` is the version: pyproject.toml reads it, CHANGELOG.md and CITATION.cff name it."""
    assert re.fullmatch(r'\d+\.\d+\.\d+', lib.__version__)
    project = pyproject()
    assert 'version' not in project['project'] and project['project']['dynamic'] == ['version']
    assert project['tool']['setuptools']['dynamic']['version'] == {'attr': 'lib.__version__'}
    released = re.findall(r'^## \[(\d+\.\d+\.\d+)\]', read('CHANGELOG.md'), re.M)
    assert released and released[0] == lib.__version__
    assert re.search(rf'^version: "?{re.escape(lib.__version__)}"?$', read('CITATION.cff'), re.M)


def test_metadata_separates_runtime_extras_and_dev():
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = pyproject()['project']
    runtime = {Requirement(r).name.lower(): Requirement(r) for r in project['dependencies']}
    assert {'torch', 'torchvision', 'numpy', 'pyyaml', 'opencv-python-headless'} <= set(runtime)
    assert not {'pytest', 'ninja', 'onnx', 'onnxruntime', 'onnxscript', 'cityscapesscripts'} & set(runtime)
    # The torch this suite runs on is inside the range the metadata states as tested.
    assert Version(torch.__version__.split('+')[0]) in runtime['torch'].specifier
    extras = project['optional-dependencies']
    for extra, modules in EXTRAS.items():
        assert requirement_names(extras[extra]) == set(modules)
    dev = {Requirement(r).name.lower(): Requirement(r) for r in extras['dev']}
    assert dev['davss'].extras == set(EXTRAS) and {'pytest', 'ninja'} <= set(dev)
    assert 'torch' not in requirement_names(pyproject()['build-system']['requires'])
    assert 'Copyright (c) 2020 jfzhuang' in read('LICENSE')


def test_readme_gives_these_install_lines():
    readme = read('README.md')
    assert f'`{INSTALL_ANYWHERE}`' in readme and f'`{INSTALL_WITH_EXTENSIONS}`' in readme
    makefile = read('Makefile')  # `make setup` runs the same two lines
    assert f'$(BIN)/{INSTALL_ANYWHERE}\n' in makefile and f'$(BIN)/{INSTALL_WITH_EXTENSIONS}\n' in makefile


# None in sys.modules: importing the module fails, importlib.util.find_spec reports it absent (as torch probes).
HIDE = 'import sys\nsys.modules.update(dict.fromkeys(sys.argv[1].split(",")))\n'


def run_hiding(modules, script, *args, env=None):
    """``script`` in a fresh interpreter in which ``modules`` cannot be imported."""
    return subprocess.run([sys.executable, '-c', HIDE + textwrap.dedent(script), ','.join(modules), *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_setup_without_torch_skips_the_extensions_in_one_message():
    """Under pip's build isolation torch is absent: setup.py still gives the metadata, builds nothing, and says how
    to build the extensions in one line; DAVSS_BUILD_CPU=1 makes that an error."""
    script = """
        import os, runpy
        sys.argv = ['setup.py', '--name', '--version']
        runpy.run_path('setup.py', run_name='__main__')
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith('DAVSS_BUILD')}
    done = run_hiding(['torch'], script, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['davss', lib.__version__]
    said = [line for line in done.stderr.splitlines() if line.startswith('[davss setup]')]
    assert len(said) == 1 and 'torch is not importable' in said[0] and INSTALL_WITH_EXTENSIONS in said[0], done.stderr
    refused = run_hiding(['torch'], script, env={**env, 'DAVSS_BUILD_CPU': '1'})
    assert refused.returncode != 0 and 'DAVSS_BUILD_CPU=1 but torch is not importable' in refused.stderr


def test_optional_extras_are_imported_only_where_used():
    """Every module of ``lib`` imports without onnx, onnxruntime, onnxscript and cityscapesscripts; what needs
    them says in one line which extra to install."""
    script = """
        import pkgutil, importlib, tempfile
        import lib
        from lib.utils.errors import UserError
        for module in pkgutil.walk_packages(lib.__path__, 'lib.'):
            importlib.import_module(module.name)
        assert not [name for name in ('onnx', 'onnxruntime', 'onnxscript', 'cityscapesscripts') if sys.modules[name]]
        from lib.infer.backends import check_backend
        from lib.infer.export import export_steps
        check_backend('torch')
        for call in (lambda: check_backend('onnxruntime'),
                     lambda: export_steps(None, tempfile.mkdtemp(), (128, 128))):  # refused before the tracing
            try:
                call()
            except UserError as err:
                print(err)
            else:
                raise AssertionError('no UserError')
    """
    done = run_hiding(['onnx', 'onnxruntime', 'onnxscript', 'cityscapesscripts'], script)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all('pip install -e ".[export]"' in line for line in lines), lines
    assert lines[0].startswith('onnxruntime is not installed') and lines[1].startswith('onnx is not installed')


def test_a_tool_says_which_extra_is_missing_in_one_line(tmp_path):
    script = """
        import runpy
        sys.argv = ['tools/infer_video.py', 'exp/synthetic/correction.yaml', '--checkpoint', 'none.pth',
                    'none.mp4', sys.argv[2], '--backend', 'onnxruntime']
        runpy.run_path('tools/infer_video.py', run_name='__main__')
    """
    done = run_hiding(['onnxruntime'], script, str(tmp_path / 'out'))
    assert done.returncode == 1 and done.stderr.splitlines() == [
        'error: onnxruntime is not installed: the ONNX export and the onnxruntime backend need the "export" extra, '
        'pip install -e ".[export]"'], done.stderr
    assert not (tmp_path / 'out').exists()


def checkout_copy(destination):
    """The checkout's files as a fresh clone of this working tree has them (tracked and new, nothing ignored)."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split('\0')
    for relative in filter(None, listed):
        source = os.path.join(REPO_ROOT, relative)
        if os.path.isfile(source):  # a file deleted in the working tree is still listed until committed
            os.makedirs(os.path.join(destination, os.path.dirname(relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(destination, relative))


def shared_packages_view(folder):
    """A folder of links to this environment's installed packages, less this project and the build tools (pip,
    setuptools, wheel), which the fresh environment must get by itself."""
    own = re.compile(r'^(davss|__editable__|pip|setuptools|wheel|_distutils_hack|pkg_resources)([-_.].*)?$|\.pth$')
    site = sysconfig.get_paths()['purelib']
    os.makedirs(folder)
    for name in os.listdir(site):
        if not own.match(name):
            os.symlink(os.path.join(site, name), os.path.join(folder, name))
    return folder


def folder_size(path):
    return sum(os.lstat(os.path.join(root, name)).st_size for root, _, names in os.walk(path) for name in names)


@pytest.mark.slow
def test_readme_install_lines_in_a_fresh_venv(tmp_path):
    """The README's two install lines, run by pip in a new virtual environment on a copy of the checkout.

    To avoid downloading torch (gigabytes) the new environment sees this environment's installed packages (torch,
    torchvision, numpy, onnx, ...) through a .pth file naming a folder of links to them, so pip counts them as
    installed; the project itself, pip, setuptools and wheel are not shared: pip installs the project from the copy
    exactly as the README says, with its build tools from the package index (pip's cache). Needs the index.
    The second line runs with DAVSS_BUILD_CUDA=0: compiling resample2d for every architecture torch supports takes
    minutes (`make gpu-check` and tests/test_ops_resample2d.py check that build); the CPU label kernels are compiled.
    """
    src, venv = tmp_path / 'davss', tmp_path / 'venv'
    checkout_copy(src)
    env = {key: value for key, value in os.environ.items()
           if key not in ('PYTHONPATH', 'VIRTUAL_ENV') and not key.startswith('DAVSS_BUILD')}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INPUT='1')
    seconds = {}

    def run(name, command, cwd, **extra_env):
        start = time.time()
        done = subprocess.run(command, cwd=cwd, env={**env, **extra_env}, capture_output=True, text=True,
                              timeout=1200)
        seconds[name] = time.time() - start
        assert done.returncode == 0, f'{name}: {shlex.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
        return done.stdout

    run('venv', [sys.executable, '-m', 'venv', str(venv)], tmp_path)
    site = run('site-packages', [str(venv / 'bin' / 'python'), '-c',
                                 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], tmp_path).strip()
    with open(os.path.join(site, '_davss_test_shared_packages.pth'), 'w') as f:
        f.write(shared_packages_view(str(tmp_path / 'shared')) + '\n')

    # Run from a folder holding a "lib" folder of its own: the installed package must still be the one imported.
    elsewhere = tmp_path / 'elsewhere'
    (elsewhere / 'lib').mkdir(parents=True)
    probe = [str(venv / 'bin' / 'python'), '-c', textwrap.dedent("""
        import importlib.metadata, lib, lib.ops
        from lib.ops import upsample_argmax
        from lib.model import build_scnet
        print(lib.__file__, lib.__version__, importlib.metadata.version('davss'), lib.ops.cuda_extension_available(),
              upsample_argmax.available())
    """)]
    pip = str(venv / 'bin' / 'pip')

    run('pip install -e ".[dev]"', [pip, *shlex.split(INSTALL_ANYWHERE)[1:]], src)
    where, version, installed, cuda_built, cpu_built = run('import after line 1', probe, elsewhere).split()
    assert where == str(src / 'lib' / '__init__.py')
    assert version == installed == lib.__version__
    assert (cuda_built, cpu_built) == ('False', 'False')  # build isolation: nothing compiled, the PyTorch paths

    run('pip install --no-build-isolation -e .', [pip, *shlex.split(INSTALL_WITH_EXTENSIONS)[1:]], src,
        DAVSS_BUILD_CUDA='0')
    where, version, installed, cuda_built, cpu_built = run('import after line 2', probe, elsewhere).split()
    assert where == str(src / 'lib' / '__init__.py') and version == installed == lib.__version__
    assert cpu_built == 'True'
    assert any(name.startswith('_upsample_argmax_cpu') for name in os.listdir(src / 'lib' / 'ops'))

    print(f'\ninstall seconds: {", ".join(f"{name} {s:.0f}" for name, s in seconds.items())}; '
          f'venv size {folder_size(venv) / 2 ** 20:.0f} MiB (torch and the other shared packages not counted)')
