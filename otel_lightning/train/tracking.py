"""Experiment tracking: each training step's figures to the console, TensorBoard and MLflow.

`--logger console,tensorboard,mlflow` (verl's `trainer.logger` idea). Each backend is the tool's
own library, writing its own format: `torch.utils.tensorboard.SummaryWriter` (event files that
TensorBoard reads) and the `mlflow` client (a local SQLite tracking store by default, never a
server unless `MLFLOW_TRACKING_URI` names one).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

LOGGERS = ("console", "tensorboard", "mlflow")


def parse_loggers(text: str | Iterable[str]) -> list[str]:
    """["console", "mlflow"] from "console,mlflow"; an unknown name is an error that lists the known ones."""
    names = [name.strip() for name in (text.split(",") if isinstance(text, str) else text) if name.strip()]
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown logger {', '.join(unknown)}; choose from {', '.join(LOGGERS)} (comma-separated)")
    return list(dict.fromkeys(names))


def scalar_metrics(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) stats dict, flattened to "a/b" keys; non-numbers and NaN are left out."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(scalar_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


class Backend(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class ConsoleBackend:
    """One line per step (through tqdm.write, so a progress bar stays whole)."""

    KEYS = ("mean_reward", "reward_std", "approx_kl", "clip_fraction", "step_s", "rollouts_per_s", "policy_version")

    def log(self, metrics: dict[str, float], step: int) -> None:
        from tqdm import tqdm

        shown = [f"{key}={metrics[key]:.4g}" for key in self.KEYS if key in metrics]
        shown += [f"{key}={value:.3g}" for key, value in metrics.items() if key.startswith("agents/")]
        tqdm.write(f"step {step}: " + " ".join(shown))

    def close(self) -> None:
        pass


class TensorBoardBackend:
    def __init__(self, log_dir: Path, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.writer.add_text("params", "\n".join(f"    {key}: {value}" for key, value in sorted(params.items())))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a crash loses no step already logged

    def close(self) -> None:
        self.writer.close()


_MLFLOW_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")


class MlflowBackend:
    """One MLflow run; metrics per step with `log_batch` through `MlflowClient` (no global state)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        artifact_location: str | None = None,
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        # Artifacts of a new experiment go beside its store, not into the current directory (MLflow's default).
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment, artifact_location)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(_MLFLOW_KEY.sub("_", k), str(v)) for k, v in params.items()])
        self.tracking_uri = tracking_uri

    def log(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_KEY.sub("_", key), value, now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


class Tracker:
    """The chosen backends behind one `log(stats, step)`. `out` holds what the file-based ones write:
    `out/tensorboard/` and, unless `MLFLOW_TRACKING_URI` says otherwise, `out/mlflow.db` (artifacts
    beside it in `out/mlruns/`)."""

    def __init__(
        self,
        loggers: str | Iterable[str],
        out: str | Path,
        *,
        run_name: str = "run",
        experiment: str = "otel-lightning",
        params: Mapping[str, Any] | None = None,
        mlflow_tracking_uri: str | None = None,
    ) -> None:
        self.names = parse_loggers(loggers)
        self.out = Path(out)
        params = dict(params or {})
        self.backends: dict[str, Backend] = {}
        if "console" in self.names:
            self.backends["console"] = ConsoleBackend()
        if "tensorboard" in self.names:
            self.tensorboard_dir = self.out / "tensorboard"
            self.backends["tensorboard"] = TensorBoardBackend(self.tensorboard_dir, params)
        if "mlflow" in self.names:
            self.out.mkdir(parents=True, exist_ok=True)
            uri = mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or self.default_mlflow_uri()
            artifacts = (self.out / "mlruns").resolve().as_uri() if uri.startswith("sqlite:") else None
            self.backends["mlflow"] = MlflowBackend(uri, experiment, run_name, params, artifacts)

    def default_mlflow_uri(self) -> str:
        # SQLite: MLflow's file store is in maintenance mode and refuses to start unless told to.
        return f"sqlite:///{(self.out / 'mlflow.db').resolve()}"

    @property
    def mlflow(self) -> MlflowBackend | None:
        return self.backends.get("mlflow")  # type: ignore[return-value]

    def log(self, stats: Mapping[str, Any], step: int) -> dict[str, float]:
        """Log a step's numbers (nested dicts flattened to "a/b"); returns what was logged."""
        metrics = scalar_metrics(stats)
        for backend in self.backends.values():
            backend.log(metrics, step)
        return metrics

    def log_artifact(self, path: Path) -> None:
        if self.mlflow is not None:
            self.mlflow.log_artifact(path)

    def close(self, failed: bool = False) -> None:
        for name, backend in self.backends.items():
            try:
                if name == "mlflow":
                    backend.close("FAILED" if failed else "FINISHED")  # type: ignore[call-arg]
                else:
                    backend.close()
            except Exception:  # one backend's failure at the end does not hide the others' data
                logger.exception("closing the %s logger failed", name)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(failed=exc_type is not None)
