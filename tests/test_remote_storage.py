"""Remote storage end to end against a real S3-compatible server (moto) on loopback.

`--storage s3://...` for Tune's checkpoints and state, and the same server as the MLflow
server's artifact store: a sweep whose driver is SIGKILLed, `--resume` from S3, every trial's
checkpoint in MLflow (fetched from S3 with its file system kept), then eval_winners and predict
reading the checkpoints back through MLflow from S3.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.servers import mlflow_server, moto_s3

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "raysweep-test"
N = 3


def cli(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def test_sweep_resume_eval_and_predict_from_s3(tmp_path):
    from mlflow.tracking import MlflowClient

    from raysweep.sweep.data import smoke_dataset

    data = Path(os.environ.get("RAYSWEEP_TEST_DATA") or smoke_dataset())
    with moto_s3(tmp_path, BUCKET) as s3_env, \
            mlflow_server(tmp_path, env=s3_env, artifacts=f"s3://{BUCKET}/mlflow") as url:
        env = {**os.environ, **s3_env, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": url}
        env.pop("RAY_ADDRESS", None)
        storage = f"s3://{BUCKET}/sweeps"
        args = ["--space", "quickstart", "--smoke-test", "--data", str(data), "--num-samples",
                str(N), "--max-concurrent", "1", "--storage", storage, "--name", "s3sweep"]
        client = MlflowClient(url)

        def finished() -> int:
            exp = client.get_experiment_by_name("quickstart")
            if exp is None:
                return 0
            return sum(r.info.status == "FINISHED" and r.data.tags.get("raysweep.role") == "trial"
                       for r in client.search_runs([exp.experiment_id]))

        log = open(tmp_path / "killed.log", "w")
        proc = subprocess.Popen(cli("raysweep.search", *args), cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 400
            while proc.poll() is None and time.time() < deadline and finished() < 1:
                time.sleep(0.5)
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the local Ray the driver started
            except ProcessLookupError:
                pass
            log.close()
        assert finished() < N

        resumed = subprocess.run(cli("raysweep.search", "--resume", "--name", "s3sweep",
                                     "--storage", storage), cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=500,
                                 start_new_session=True)
        assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
        assert "could not fetch checkpoint" not in resumed.stderr
        exp = client.get_experiment_by_name("quickstart")
        runs = client.search_runs([exp.experiment_id])
        trials = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
        parent = next(r for r in runs if r.data.tags.get("raysweep.role") == "sweep")
        assert len(trials) == N and {r.info.status for r in trials} == {"FINISHED"}
        for r in trials:  # every checkpoint reached MLflow, from S3
            assert [a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")], r
        import boto3

        s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"],
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert any(k.startswith("sweeps/s3sweep/") and "checkpoint" in k for k in keys)
        assert any(k.startswith("mlflow/") and "/checkpoint/" in k for k in keys)
        assert "sweeps/s3sweep/results.csv" in keys

        winners = subprocess.run(cli("raysweep.eval_winners", "--parent-run",
                                     parent.info.run_id, "--tracking-uri", url, "--top-k", "1",
                                     "--n-boot", "50", "--out", str(tmp_path / "winners")),
                                 cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=400)
        out = winners.stdout + winners.stderr
        assert winners.returncode == 0, out[-4000:]
        model = re.search(r"models:/[\w.-]+@champion", out)
        assert model, out[-3000:]
        photo = next(p for p in (data.parent / "images").rglob("*") if p.suffix.lower() in
                     (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
        pred = subprocess.run(cli("raysweep.predict", str(photo), "--model", model.group(0),
                                  "--format", "json"), cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert pred.returncode == 0, (pred.stdout + pred.stderr)[-3000:]
        assert '"L"' in pred.stdout or "lab" in pred.stdout.lower(), pred.stdout[-2000:]
