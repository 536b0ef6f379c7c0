"""Generated pipeline files and overrides: a StagewiseError or a plan, nothing else."""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewise.config.loading import dump_yaml
from stagewise.errors import StagewiseError
from stagewise.pipeline.spec import load_pipeline

names = st.sampled_from(["a", "b", "c", "d", "a b", "", "x" * 300, "é"])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10), st.floats(allow_nan=True), st.text(max_size=12)
)
references = st.sampled_from(
    [
        "${parameters.lr}",
        "${parameters.nope}",
        "${tasks.a.outputs.o}",
        "${tasks.zz.outputs.o}",
        "${",
        "${}",
    ]
)
values = st.one_of(scalars, references, st.lists(scalars, max_size=2))
resources = st.fixed_dictionaries(
    {},
    optional={
        "cpu": st.one_of(st.sampled_from(["1", "500m", "0", "-1", "abc", "2Gi"]), scalars),
        "memory": st.one_of(st.sampled_from(["4Gi", "1x", "-5"]), scalars),
        "gpu": st.one_of(st.sampled_from(["1", "1.5", "0.5"]), scalars),
    },
)
ports = st.lists(
    st.fixed_dictionaries({"name": names}, optional={"source": values, "destination": values}),
    max_size=2,
)
tasks = st.fixed_dictionaries(
    {"name": names},
    optional={
        "type": st.sampled_from(["python", "shell", "training", "pyton", 3]),
        "function": st.sampled_from(["m:f", "nocolon", "", "x.py:f", "m:"]),
        "command": st.one_of(values, st.lists(values, max_size=2)),
        "resources": st.one_of(resources, scalars),
        "inputs": st.one_of(ports, scalars),
        "outputs": ports,
        "parameters": st.dictionaries(st.text(max_size=4), values, max_size=2),
        "retries": values,
        "timeout": st.one_of(values, st.sampled_from(["5m", "90s", "1h", "soon"])),
        "cache": values,
    },
)
pipelines = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["stagewise/v1", "train-platform/v1"]),
        "kind": st.sampled_from(["Pipeline", "Pipe"]),
        "metadata": st.fixed_dictionaries({"name": names}),
        "spec": st.fixed_dictionaries(
            {"tasks": st.lists(tasks, max_size=4)},
            optional={
                "dependencies": st.lists(
                    st.fixed_dictionaries({"from": names, "to": names}), max_size=3
                ),
                "parameters": st.dictionaries(st.sampled_from(["lr", "n"]), values, max_size=2),
            },
        ),
    }
)
overrides = st.lists(
    st.sampled_from(
        [
            "lr=1",
            "+lr=2",
            "++x.y=3",
            "~lr",
            "tasks.a.retries=2",
            "tasks.zz.x=1",
            "=",
            "a[0]=1",
            "lr=[1,",
        ]
    ),
    max_size=3,
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=pipelines, extra=overrides)
def test_only_stagewise_errors(tmp_path: Path, data: dict, extra: list[str]) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(dump_yaml(data))
    with contextlib.suppress(StagewiseError):
        load_pipeline(path, extra)
