"""Shared fixtures for mcpguard's tests. Keep this file small.

- `free_port()`: a TCP port on 127.0.0.1 that was free a moment ago.
- `mlflow_stack` (session scope): a real MLflow tracking server on
  127.0.0.1 with sqlite in a temporary folder, seeded once per test session
  (`mcpguard.stack.seed`) and stopped at the session's end. Tests that
  change MLflow data should change only what they create, or use their own
  tag keys, since the server is shared. Installs the MLflow environment on
  first use (`python3 dev.py test` does that before pytest starts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mcpguard import stack
from mcpguard.stack import free_port  # noqa: F401  (re-exported for tests)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@dataclass
class MlflowStack:
    """What the `mlflow_stack` fixture yields.

    `uri`: the tracking URI (`http://127.0.0.1:<port>`); `seeded`: what
    `stack.seed` returned (`experiment_id`, `run_ids`, `model_name`,
    `versions`, ...); `data_dir`; `env_dir`: the MLflow environment;
    `server`: the `MlflowTrackingServer`.
    """

    server: stack.MlflowTrackingServer
    seeded: dict[str, Any]
    env_dir: Path
    data_dir: Path
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.data_dir / "logs"
        self.logs.mkdir(exist_ok=True)

    @property
    def uri(self) -> str:
        return self.server.uri

    def server_config(
        self, *, policy: str | os.PathLike[str] | None = None, name: str = "mlflow", stderr_log=None
    ) -> dict[str, Any]:
        """The `[servers.<name>]` stdio entry running `mlflow-mcp` against this server
        (see `stack.mlflow_server_config`); its stderr goes to `data_dir/logs/<name>.stderr.log`
        unless `stderr_log` is given."""
        return stack.mlflow_server_config(
            self.uri,
            policy=policy,
            stderr_log=stderr_log or self.logs / f"{name}.stderr.log",
            name=name,
            env_dir=self.env_dir,
        )

    def python(self, code: str) -> str:
        """Run `code` with MLflow's own client against this server; returns its stdout."""
        return stack.mlflow_python(code, self.uri, env_dir=self.env_dir)


@pytest.fixture(scope="session")
def mlflow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowStack]:
    """A seeded MLflow tracking server shared by the whole test session."""
    env_dir = stack.ensure_mlflow_env()
    data_dir = tmp_path_factory.mktemp("mlflow")
    server = stack.MlflowTrackingServer(data_dir, env_dir=env_dir)
    server.start()
    try:
        seeded = stack.seed(server.uri, env_dir=env_dir)
        yield MlflowStack(server=server, seeded=seeded, env_dir=env_dir, data_dir=data_dir)
    finally:
        server.stop()
