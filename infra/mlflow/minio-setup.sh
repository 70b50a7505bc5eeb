#!/bin/sh
# One-shot MinIO setup for the MLflow stack (the `minio-setup` service of docker-compose.yaml):
# the artifact bucket, and a MinIO user for MLflow that may touch only that bucket, so the MLflow
# server never holds MinIO's root key. With MINIO_CHECKPOINT_USER set, also a bucket and a
# user for the sweeps' checkpoints (`--storage s3://...` with AWS_ENDPOINT_URL pointing here).
# Idempotent: re-running it on every `docker compose up` re-applies the same state.
#
# Secrets never reach a command line (`ps` shows those to every user of the host): the root key
# comes in through MC_HOST_minio (mc reads an alias from it), and each user's secret key through
# mc's stdin. Required: MC_HOST_minio (http://ROOT_USER:ROOT_PASSWORD@minio:9000),
# ARTIFACT_BUCKET, MINIO_MLFLOW_USER, MINIO_MLFLOW_PASSWORD. Optional:
# MINIO_CHECKPOINT_USER, MINIO_CHECKPOINT_PASSWORD, CHECKPOINT_BUCKET (raysweep).
set -eu

need() {
    eval "value=\${$1:-}"
    if [ -z "$value" ]; then
        echo "minio-setup.sh: $1 is not set: $2" >&2
        exit 2
    fi
}
need MC_HOST_minio "the MinIO root alias, http://ROOT_USER:ROOT_PASSWORD@minio:9000"
need ARTIFACT_BUCKET "the bucket MLflow keeps artifacts in"
need MINIO_MLFLOW_USER "the MinIO user MLflow writes artifacts as"
need MINIO_MLFLOW_PASSWORD "that user's secret key (8 characters or more)"

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# grant USER SECRET BUCKET: the bucket, a policy for it alone, and USER holding just that policy.
grant() {
    user=$1 secret=$2 bucket=$3 policy="$3-readwrite"
    mc mb --ignore-existing "minio/$bucket"
    cat > "$work/$policy.json" <<JSON
{"Version": "2012-10-17", "Statement": [
 {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
  "Resource": ["arn:aws:s3:::$bucket"]},
 {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
  "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
  "Resource": ["arn:aws:s3:::$bucket/*"]}]}
JSON
    mc admin policy create minio "$policy" "$work/$policy.json"
    # printf is a shell builtin: the secret goes down the pipe, never into an argv.
    printf '%s\n%s\n' "$user" "$secret" | mc admin user add minio
    # Attaching an already attached policy is an error in mc; only a missing policy is fatal.
    if ! mc admin policy attach minio "$policy" --user "$user"; then
        mc admin user info minio "$user" | grep -q "$policy"
    fi
    echo "minio-setup.sh: bucket $bucket ready for user $user"
}

grant "$MINIO_MLFLOW_USER" "$MINIO_MLFLOW_PASSWORD" "$ARTIFACT_BUCKET"
if [ -n "${MINIO_CHECKPOINT_USER:-}" ]; then
    need MINIO_CHECKPOINT_PASSWORD "the checkpoint user's secret key (8 characters or more)"
    grant "$MINIO_CHECKPOINT_USER" "$MINIO_CHECKPOINT_PASSWORD" \
        "${CHECKPOINT_BUCKET:-raysweep}"
fi
