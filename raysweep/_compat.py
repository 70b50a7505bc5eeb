"""Every private Ray and MLflow API raysweep uses, in one place, each behind a small function.

Tested with ray 2.60.0 and mlflow 3.17.2 (the upper bounds in pyproject.toml stop at the next
minor releases, which may move these). When an upgrade breaks one of them,
tests/test_compat.py fails naming the function; fix it here and nowhere else.

Why each is private and not replaced by a public API:
- `in_tune_session`: Ray has no public "am I inside a Tune function trainable?" probe;
  `ray.tune.get_context()` answers outside a trial too.
- `placement_group_table`: the GCS table. The public State API needs the dashboard, which a
  small or test cluster runs without; the GCS always answers.
- `autoscaler_status`: what the autoscaler can launch. `ray status` prints it but Ray has no
  public API that returns it; the autoscaler's monitor keeps it in the GCS KV store.
- `autoscaler_v2`: whether the cluster runs autoscaler v2 (which writes no
  `__autoscaling_status`). Ray's own `is_autoscaler_v2` answers, but it is not in the public API
  reference, and without `fetch_from_server` it answers for this process, not the cluster.
- `standing_request`: what `request_resources` currently asks for. Ray can set the request but
  not read it back; v1 keeps it in the GCS KV store, v2 as the GCS's cluster constraint.
- `keep_secrets_out_of_tune_env`: Tune copies AWS_* keys of the driver into every trainable's
  runtime env (logged in plain text by Ray's agent) and offers no switch to stop it.
- `job_is_dead`: whether a driver's job has ended. The public job API covers submitted jobs only
  (a driver started by hand has none) and the State API needs the dashboard.
- `train_report_queue`: a Train V2 worker's own report queue. The controller's poll takes a
  report off it and then asks whether the training thread still runs; a report put between
  the two by a thread that then ends is never read (ray 2.60 worker.poll_status, by reading),
  so a run's last result can be lost. Waiting until the queue is empty before the loop returns closes that
  window; Ray offers no public "flush my reports".
- `mlflow_store_uris` / `restore_mlflow_store_uris`: MLflow sets its fluent API's store with
  `set_tracking_uri` but has no public getter that tells "never set" from "the default", which
  a library call needs to put the caller's process back as it found it.

Ray is imported inside the functions: the read-only commands (summarize, eval_winners' reading
path) import this module's MLflow half and must not pay for Ray.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

TESTED = {"ray": "2.60.0", "mlflow": "3.17.2"}


# ---- Ray -------------------------------------------------------------------------------------

def in_tune_session() -> bool:
    """True inside a Ray Tune function trainable (not a Train worker, not plain Python)."""
    if "ray.tune" not in sys.modules:  # nothing imported Tune: certainly not in a trial
        return False
    # A moved private name must fail loudly here (tests/test_compat.py), not read as "no".
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())


def placement_group_table() -> Iterator[Any]:
    """The GCS placement-group table as protobuf `PlacementGroupTableData` records."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    for raw in state._connect_and_get_accessor().get_placement_group_table():
        yield gcs_pb2.PlacementGroupTableData.FromString(raw)


def placement_group_live_states() -> tuple[int, ...]:
    """The `PlacementGroupTableData.state` values of a group that holds or awaits resources."""
    from ray.core.generated import gcs_pb2

    t = gcs_pb2.PlacementGroupTableData
    return (t.CREATED, t.PENDING, t.RESCHEDULING)


def autoscaler_status() -> bytes | None:
    """The autoscaler's status JSON as its (v1) monitor writes it to the GCS KV store (key
    `__autoscaling_status`); None when no autoscaler runs (a plain `ray start` cluster)."""
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get("__autoscaling_status")


def autoscaler_v2() -> bool:
    """True when the connected cluster's GCS runs with autoscaler v2 (KubeRay with
    `autoscalerOptions.version: v2`, or `RAY_enable_autoscaler_v2=1` on the head). Asks the
    cluster, not this process's environment."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    return bool(is_autoscaler_v2(fetch_from_server=True))


def standing_request() -> list[dict[str, float]]:
    """The bundles of the autoscaler's standing `request_resources` request; [] when none."""
    if autoscaler_v2():
        from ray.autoscaler.v2.sdk import get_cluster_resource_state
        from ray.experimental.internal_kv import internal_kv_get_gcs_client

        state = get_cluster_resource_state(internal_kv_get_gcs_client())
        return [dict(r.request.resources_bundle)
                for c in state.cluster_resource_constraints
                for r in c.resource_requests for _ in range(r.count)]
    from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return [dict(b) for b in json.loads(raw)] if raw else []


def job_is_dead(job_id_hex: str) -> bool:
    """True when the GCS has marked the job (its driver) dead; False while it runs. A job the
    GCS does not know counts as dead (nothing to watch)."""
    from ray._private.state import state

    for job in state.job_table():
        if job["JobID"] == job_id_hex:
            return bool(job["IsDead"])
    return True


def keep_secrets_out_of_tune_env(is_secret: Callable[[str], bool]) -> list[str]:
    """Stop Tune copying the driver's secret variables (its AWS keys) into its trainable actor's
    runtime env, which Ray writes in plain text to its runtime-env agent log. Returns the names
    taken off Tune's list.

    Tune's class cache holds the list as a module global, read when a trainable is registered.
    A local Ray started by the driver gives its workers the driver's environment anyway; the
    nodes of a cluster need their own credentials (an instance profile), as infra/ sets up."""
    from ray.tune.execution import class_cache

    removed = sorted(n for n in class_cache.ENV_VARS_TO_PROPAGATE if is_secret(n))
    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - set(removed)
    return removed


def train_report_queue() -> Any:
    """The calling Train V2 worker's report queue (a `queue.Queue`, maxsize 1): a report sits
    there until the controller's next poll takes it. None where Train runs the loop without a
    controller (its local mode: no worker context, nothing to poll)."""
    from ray.train.v2._internal.execution.context import get_train_context

    try:
        context = get_train_context()
    except RuntimeError:  # "TrainContext has not been initialized"
        return None
    return context.get_result_queue()


# ---- MLflow ----------------------------------------------------------------------------------

def mlflow_store_uris() -> tuple[str | None, str | None]:
    """(tracking, registry) URIs the fluent API was explicitly set to; None where never set."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (getattr(tracking_utils, "_tracking_uri", None),
            getattr(registry_utils, "_registry_uri", None))


def restore_mlflow_store_uris(uris: tuple[str | None, str | None]) -> None:
    """Put back what `mlflow_store_uris()` returned, "never set" included."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri = uris
