"""Every stage module answers --help with what it reads, writes and which params it uses, exits 0 and writes
nothing; an unknown argument is one error line. Each output dvc.yaml declares is named in its stage's help, so a
grep of a path lands on its writer."""

import importlib
import os
import subprocess
import sys

import pytest
from conftest import ROOT, copy_project, tree_snapshot
from test_dvc_yaml import STAGES, stage_module

from stages.core import stage

MODULES = sorted({stage_module(s) for s in STAGES.values()})


def declared_outputs(module: str) -> set[str]:
    outs = set()
    for stage_def in STAGES.values():
        if stage_module(stage_def) != module:
            continue
        for entry in stage_def.get("outs", []) + stage_def.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            outs.add(path.replace(f"/{stage_def.get('item')}", "/<model>") if stage_def.get("item") else path)
    return outs


@pytest.mark.parametrize("module", MODULES)
def test_help_names_what_the_stage_reads_writes_and_its_params_and_writes_nothing(
    module, tmp_path, monkeypatch, capsys
):
    project = copy_project(tmp_path / "p")
    before = tree_snapshot(project)
    monkeypatch.chdir(project)
    entry = importlib.import_module(module)
    choices = {"model": ["linear", "simple_net", "resnet18"]} if module == "stages.train_mnist" else None
    with pytest.raises(SystemExit) as exit_info:
        stage.run(entry.main, entry.__doc__, entry.PARAMS, entry.SCHEMA, choices=choices, argv=["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "Reads:" in shown and "Writes:" in shown and "params.yaml keys:" in shown
    for key in entry.PARAMS:
        assert key in shown
    for output in declared_outputs(module):
        assert output in shown, f"{output} is not named in {module}'s help"
    assert tree_snapshot(project) == before


def test_help_from_the_command_line_and_a_bad_argument(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "stages.fetch_pets", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "data/raw/pets/images/" in shown.stdout and shown.stderr == ""
    bad = subprocess.run(
        [sys.executable, "-m", "stages.fetch_pets", "--fast"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip() == "error: python -m stages.fetch_pets: unrecognized arguments: --fast (see --help)"


HEAVY = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "sklearn", "PIL", "scipy", "dvc")
LOADED_BY_HELP = """
import contextlib, io, runpy, sys
module, heavy = sys.argv[1], sys.argv[2:]
sys.argv = [module, "--help"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    runpy.run_module(module, run_name="__main__")
print(" ".join(sorted(name for name in heavy if name in sys.modules)))
"""


@pytest.mark.parametrize("module", [*MODULES, "stages.compare", "stages.predict", "stages.review"])
def test_help_answers_before_any_heavy_library_loads(module):
    """--help in under half a second (torch alone takes seconds to import): nothing heavy loads before the command
    line is parsed. Checked by what is loaded, not by a clock, so a busy machine cannot fail it or pass it."""
    shown = subprocess.run(
        [sys.executable, "-c", LOADED_BY_HELP, module, *HEAVY], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "", f"{module} --help loads {shown.stdout.strip()}"


def test_user_commands_answer_help_too(capsys):
    from stages import compare, predict

    for command in (compare.cli, predict.cli):
        with pytest.raises(SystemExit) as exit_info:
            command(["--help"])
        assert exit_info.value.code == 0 and "Reads" in capsys.readouterr().out


EXITING_STAGE = '''"""A stage that leaves an exit handler, an object to tear down and, if asked, a thread working."""
import atexit, sys, threading, time
from pathlib import Path
from stages.core import stage
from stages.core.schema import CORE

out, thread = Path(sys.argv[-1]), "--thread" in sys.argv
sys.argv = sys.argv[:1]  # the stage itself takes no arguments


class TornDown:
    def __del__(self):
        (out / "torn_down").write_text("yes")


KEPT = TornDown()


def main(p):
    atexit.register((out / "exit_handler").write_text, "yes")
    if thread:
        threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread").write_text("yes"))).start()
    print("done")


stage.run(main, __doc__, [], CORE)
'''


@pytest.mark.parametrize("thread", [False, True])
def test_a_stage_program_exits_0_after_its_exit_handlers_without_the_interpreter_teardown(tmp_path, thread):
    """A stage run as a program skips the interpreter's teardown of every module (1-2 s with torch loaded) but runs
    the exit handlers, which stop DataLoader workers and remove temporary files; a thread still working is waited
    for, as the interpreter would."""
    script = tmp_path / "exiting_stage.py"
    script.write_text(EXITING_STAGE)
    args = [sys.executable, str(script), *(["--thread"] if thread else []), str(tmp_path)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert (tmp_path / "exit_handler").read_text() == "yes"
    # The thread's case takes the interpreter's own exit, which waits for it (whether that exit tears down a
    # module's objects is the interpreter's business: 3.11 does, 3.12 not always).
    assert (tmp_path / "thread").exists() == thread
    if not thread:
        assert not (tmp_path / "torn_down").exists()
