"""The code keeps the shape of DESIGN.md §4: layers point down, no cycles, a light public face."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path, env_path: Path | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    env = None if env_path is None else {"PYTHONPATH": str(env_path), "PATH": ""}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env)


def test_the_import_contracts_of_pyproject_are_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


@pytest.mark.parametrize("violation", ["upward", "sideways", "cycle", "arviz-boundary"])
def test_the_contracts_catch_a_violation(tmp_path, violation):
    """The same contracts, on a skeleton of the two packages with one bad import, fail."""
    files = {
        "models/__init__.py": "", "models/a.py": "", "models/b.py": "",
        "inference/__init__.py": "", "inference/diagnostics.py": "", "inference/runtime.py": "",
    }
    for sub in ("cli", "experiment", "comparison", "conditioning", "finetuning", "storage"):
        files[f"inference/{sub}/__init__.py"] = ""
    files["inference/comparison/kl.py"] = "import inference.conditioning\nimport models.a\n"  # allowed: down
    bad = {
        "upward": ("inference/conditioning/__init__.py", "import inference.comparison.kl\n"),
        "sideways": ("inference/finetuning/__init__.py", "import inference.conditioning\n"),
        "cycle": ("models/a.py", "import models.b\n"),
        "arviz-boundary": ("inference/diagnostics.py", "import models.a\n"),
    }[violation]
    if violation == "cycle":
        files["models/b.py"] = "import models.a\n"
    files[bad[0]] = bad[1]
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject[pyproject.index("[tool.importlinter]"):
                                                      pyproject.index("[tool.pytest.ini_options]")])
    assert _lint_imports(ROOT, None).returncode == 0  # sanity: the real tree passes
    result = _lint_imports(tmp_path, tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "BROKEN" in result.stdout


def test_the_public_api_imports_no_torch_until_used():
    code = textwrap.dedent("""
        import sys
        import inference, models, inference.cli
        assert 'torch' not in sys.modules and 'pyro' not in sys.modules and 'numpy' not in sys.modules, \\
            sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules)
        from inference import condition, Posterior
        from models import make_evidence, random_personas, simulate_corpus
        assert 'torch' in sys.modules
        assert set(inference.__all__) <= set(dir(inference)) and set(models.__all__) <= set(dir(models))
        for name in inference.__all__ + models.__all__:
            getattr(inference if name in inference.__all__ else models, name)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_unknown_public_name_is_an_attribute_error():
    import inference
    import models

    for package in (inference, models):
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018


#: the size the team agreed on (DEVELOPERS.md): modules of about 350 lines, functions of about 60
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 360, 60


def _sizes():
    import ast

    for root in ("models", "inference"):
        for path in sorted((ROOT / root).rglob("*.py")):
            text = path.read_text()
            yield "module", path.relative_to(ROOT), len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    body = node.end_lineno - node.lineno + 1 - (len(doc.splitlines()) + 2 if doc else 0)
                    yield "function", f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", body


def test_modules_and_functions_stay_small():
    """No module above ~350 lines, no function body (docstring aside) above ~60 lines."""
    too_long = [f"{kind} {where}: {size} lines" for kind, where, size in _sizes()
                if size > (MAX_MODULE_LINES if kind == "module" else MAX_FUNCTION_LINES)]
    assert not too_long, "\n".join(too_long)
