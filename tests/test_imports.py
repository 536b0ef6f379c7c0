"""The light core stays light: no torch, ray or fastapi behind `import stagewise` or the
stage manager, and the package's public names resolve."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "ray", "fastapi")

PROBE = """
import sys
{statement}
heavy = [name for name in {heavy!r} if name in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def loaded_heavy_modules(statement: str) -> str:
    code = PROBE.format(statement=statement, heavy=HEAVY)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1].removeprefix("HEAVY:")


def test_import_stagewise_loads_no_heavy_dependency() -> None:
    assert loaded_heavy_modules("import stagewise, stagewise.release, stagewise.config") == ""


def test_stage_status_loads_no_heavy_dependency(repo) -> None:  # type: ignore[no-untyped-def]
    statement = (
        "import sys\n"
        "from stagewise.cli.main import app\n"
        f"sys.argv = ['stagewise', 'stage', 'status', '--repo', {str(repo)!r}]\n"
        "try:\n    app()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\nprint()"
    )
    assert loaded_heavy_modules(statement) == ""


def test_public_names_resolve() -> None:
    import stagewise

    for name in stagewise.__all__:
        assert getattr(stagewise, name) is not None


def test_no_unsafe_loading_or_eval_in_the_source() -> None:
    import stagewise

    pattern = re.compile(
        r"yaml\.(load|unsafe_load|full_load)\(|(?<!\.)\beval\(|\bexec\(|pickle\.loads?\("
    )
    offenders = [
        f"{path}:{number}"
        for path in Path(stagewise.__file__).parent.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
