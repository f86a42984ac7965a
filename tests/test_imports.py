"""Every module imports first, with no other lfagg module loaded before it (``from
lfagg.training import train_encoder`` once failed so on a circular import that a test
session, having imported lfagg.models before, never saw)."""

import os
import subprocess
import sys
from pathlib import Path

import lfagg

PACKAGE = Path(lfagg.__file__).parent
MODULES = sorted(".".join(("lfagg",) + p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                 for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")

# one interpreter (NumPy and scikit-learn load once); lfagg's modules are dropped before each import
SCRIPT = """
import importlib, sys, traceback
failed = []
for module in sys.argv[1:]:
    for name in [n for n in sys.modules if n == "lfagg" or n.startswith("lfagg.")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except Exception:
        failed.append(module + ": " + traceback.format_exc(limit=-2))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first():
    assert len(MODULES) > 30 and "lfagg.training.loop" in MODULES
    optional = {"lfagg.torch", "lfagg.dask"}  # their extras may be absent; tests of their own import them
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT, *(m for m in MODULES if m not in optional)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kernels_and_the_command_line_help_do_not_import_scikit_learn():
    # Importing scikit-learn takes about a second: lfagg, lfagg.ops and `lfagg --help` must not pay it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = ("import sys, lfagg, lfagg.ops, lfagg.encoders.soft, lfagg.cli\n"
              "try:\n    lfagg.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    probe_script = "import sys, lfagg; lfagg.BagOfWords; print('sklearn' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", probe_script], capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "True", probe.stderr  # the probe itself can see scikit-learn arrive


def test_the_core_stub_names_what_every_compiled_core_has():
    """_core.pyi, which type checkers see as lfagg._native.core: the same functions."""
    import ast
    import pathlib

    from lfagg import _native

    stub = ast.parse((pathlib.Path(_native.__file__).parent / "_core.pyi").read_text())
    declared = {node.name for node in stub.body if isinstance(node, ast.FunctionDef)}
    declared |= {node.target.id for node in stub.body if isinstance(node, ast.AnnAssign)}
    exposed = {name for name in dir(_native.core) if not name.startswith("_")}
    assert declared == exposed


def test_the_submodules_the_readme_names_are_attributes_of_lfagg():
    """lfagg.experiments.T1_PARAMS and lfagg.mil.mil_benchmark after a plain `import lfagg`
    (they raised AttributeError; lfagg.datasets and the others loaded on first use)."""
    code = ("import lfagg; assert lfagg.experiments.T1_PARAMS and lfagg.mil.mil_benchmark and lfagg.datasets "
            "and lfagg.training.train_encoder")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_every_modules_all_names_what_it_defines():
    """A name in ``__all__`` that its module lacks fails ``from module import *``; the public
    modules declare one (lfagg.bags and lfagg.persistence had none)."""
    import importlib

    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra that is absent
            continue
        missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names {missing}"
    for name in ("lfagg.bags", "lfagg.persistence", "lfagg.store", "lfagg.ops", "lfagg.normalize"):
        assert importlib.import_module(name).__all__
