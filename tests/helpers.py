"""Helpers shared by the tests (fixtures live in conftest.py)."""
import importlib.util
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """Import ``tools/<name>.py`` as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
