"""Optional experiment tracking: MLflow runs and TensorBoard scalars. Off by default.

Turned on by the experiment config::

    tracking:
      mlflow: true                 # one MLflow run per (strategy, seed)
      tensorboard: true            # OUT/tensorboard/<strategy>/seed<k>/events.out.tfevents.*
      tracking_uri: null           # default sqlite:///OUT/mlflow.db; or http://host:5000, file:..., ...
      experiment_name: null        # MLflow experiment; default: the config's name

The experiment runner logs each finished run: its parameters (strategy parameters, seed,
backbone, target), every per-epoch row of its history (``metrics.jsonl``) as metrics with
``step = epoch``, and the final ``test_accuracy``, ``final_val_accuracy``,
``final_train_accuracy``, ``train_time`` and ``trainable_params``. Logging after each fit
(rather than inside the training loop) keeps the Trainer free of tracking code and logs the
feature-space adapters' histories the same way.

MLflow's default store here is SQLite in the run directory: MLflow 3 refuses new
file-system stores (``./mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set.
Install with ``pip install "transferkit[tracking]"`` (``mlflow``, ``tensorboard``).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import MissingDependencyError


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"tracking.{what}: true needs the '{what}' package; install it with "
            f"pip install \"transferkit[tracking]\" (or set tracking.{what}: false).") from None


def _scalar(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat_params(v, f"{prefix}{k}."))
        elif callable(v):
            out[f"{prefix}{k}"] = getattr(v, "name", type(v).__name__)
        else:
            out[f"{prefix}{k}"] = str(v)[:500]  # MLflow caps parameter values
    return out


class Tracker:
    """Logs finished runs to MLflow and/or TensorBoard; a no-op when both are off.

    Parameters
    ----------
    out_dir
        The experiment's output directory (holds ``mlflow.db`` and ``tensorboard/`` by default).
    mlflow, tensorboard
        Which back ends to use.
    tracking_uri
        MLflow tracking URI; ``None``: ``sqlite:///<out_dir>/mlflow.db``.
    experiment_name
        MLflow experiment name.
    """

    def __init__(self, out_dir, *, mlflow: bool = False, tensorboard: bool = False, tracking_uri: str | None = None,
                 experiment_name: str = "transferkit"):
        self.out_dir = Path(out_dir)
        self.use_mlflow, self.use_tensorboard = bool(mlflow), bool(tensorboard)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self._client = self._experiment_id = None
        if self.use_mlflow:
            _require("mlflow", "mlflow")
            from mlflow.tracking import MlflowClient

            uri = tracking_uri or f"sqlite:///{(self.out_dir / 'mlflow.db').resolve()}"
            self.tracking_uri = uri
            self._client = MlflowClient(tracking_uri=uri)
            exp = self._client.get_experiment_by_name(experiment_name)
            if exp is None:
                kw = {}
                if tracking_uri is None:  # keep artifacts beside the local database, not in the cwd
                    kw["artifact_location"] = (self.out_dir / "mlartifacts").resolve().as_uri()
                self._experiment_id = self._client.create_experiment(experiment_name, **kw)
            else:
                self._experiment_id = exp.experiment_id
        if self.use_tensorboard:
            _require("tensorboard", "tensorboard")

    @property
    def enabled(self) -> bool:
        return self.use_mlflow or self.use_tensorboard

    def log_run(self, name: str, params: dict, history: list[dict], final: dict) -> dict:
        """Log one finished (strategy, seed) run; return ``{"mlflow_run_id", "tensorboard_dir"}``
        for the back ends in use."""
        out = {}
        if self.use_mlflow:
            out["mlflow_run_id"] = self._log_mlflow(name, params, history, final)
        if self.use_tensorboard:
            out["tensorboard_dir"] = str(self._log_tensorboard(name, history, final))
        return out

    def log_experiment_run(self, cfg, scfg, seed: int, strategy, row: dict) -> dict:
        """The experiment runner's call after each fit (``{}`` when tracking is off)."""
        if not self.enabled:
            return {}
        params = {"strategy": scfg.name, "label": scfg.key, "seed": seed, "backbone": cfg.backbone.name,
                  "image_size": cfg.backbone.image_size, "target": cfg.target, "source": cfg.source,
                  "labels_per_class": cfg.split.labels_per_class, **scfg.params}
        # "final_": the per-epoch history already has val_accuracy / train_accuracy series
        final = {"test_accuracy": row.get("accuracy"), "final_val_accuracy": row.get("val_accuracy"),
                 "final_train_accuracy": row.get("train_accuracy"), "train_time": row.get("train_time"),
                 "trainable_params": row.get("trainable_params")}
        return self.log_run(f"{scfg.key}/seed{seed}", params, list(getattr(strategy, "history_", None) or []), final)

    def _log_mlflow(self, name, params, history, final) -> str:
        from mlflow.entities import Metric, Param

        c = self._client
        run = c.create_run(self._experiment_id, run_name=name, tags={"transferkit.output_dir": str(self.out_dir)})
        rid = run.info.run_id
        try:
            ts = int(run.info.start_time or 0)
            metrics = []
            for i, row in enumerate(history):
                step = int(row.get("epoch", i))
                metrics += [Metric(k, v, ts, step) for k, v in ((k, _scalar(v)) for k, v in row.items())
                            if v is not None and k != "epoch"]
            metrics += [Metric(k, v, ts, 0) for k, v in ((k, _scalar(v)) for k, v in final.items()) if v is not None]
            ps = [Param(k, v) for k, v in _flat_params(params).items()]
            for i in range(0, len(ps), 100):  # MLflow's batch limits: 100 params, 1000 metrics
                c.log_batch(rid, params=ps[i:i + 100])
            for i in range(0, len(metrics), 1000):
                c.log_batch(rid, metrics=metrics[i:i + 1000])
            c.set_terminated(rid, "FINISHED")
        except BaseException:
            c.set_terminated(rid, "FAILED")
            raise
        return rid

    def _log_tensorboard(self, name, history, final) -> Path:
        from torch.utils.tensorboard import SummaryWriter

        logdir = self.out_dir / "tensorboard" / name
        w = SummaryWriter(log_dir=str(logdir))
        try:
            for i, row in enumerate(history):
                step = int(row.get("epoch", i))
                for k, v in row.items():
                    v = _scalar(v)
                    if v is not None and k != "epoch":
                        w.add_scalar(f"epoch/{k}", v, step)
            for k, v in final.items():
                v = _scalar(v)
                if v is not None:
                    w.add_scalar(f"final/{k}", v, 0)
        finally:
            w.close()
        return logdir


def make_tracker(cfg, out_dir, experiment_name: str = "transferkit") -> Tracker:
    """A :class:`Tracker` from a ``tracking`` config section (``None``: everything off)."""
    if cfg is None:
        return Tracker(out_dir)
    return Tracker(out_dir, mlflow=cfg.mlflow, tensorboard=cfg.tensorboard, tracking_uri=cfg.tracking_uri,
                   experiment_name=cfg.experiment_name or experiment_name)
