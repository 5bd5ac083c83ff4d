#!/usr/bin/env bash
# Deploy an app with the pcaptool sidecar using gcloud flags only (needs a gcloud recent
# enough for per-container --startup-probe and --depends-on; otherwise use service.yaml:
# `gcloud run services replace examples/service.yaml`).
set -euo pipefail

: "${PROJECT_ID:?set PROJECT_ID}"
SERVICE_NAME="${SERVICE_NAME:-my-service}"
SERVICE_REGION="${SERVICE_REGION:-us-central1}"
SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-${SERVICE_NAME}@${PROJECT_ID}.iam.gserviceaccount.com}"
APP_IMAGE="${APP_IMAGE:-us-docker.pkg.dev/cloudrun/container/hello}"
APP_PORT="${APP_PORT:-8080}"
PCAP_IMAGE="${PCAP_IMAGE:-us-central1-docker.pkg.dev/${PROJECT_ID}/tools/pcaptool:latest}"
PCAP_GCS_BUCKET="${PCAP_GCS_BUCKET:?set PCAP_GCS_BUCKET}"
PCAP_FILTER="${PCAP_FILTER:-tcp port ${APP_PORT}}"

# The sidecar's identity writes the parts: objects in this one bucket, no bucket
# administration (create, read back to verify the checksum, delete a corrupt upload).
gcloud storage buckets add-iam-policy-binding "gs://${PCAP_GCS_BUCKET}" \
  --member="serviceAccount:${SERVICE_ACCOUNT}" --role=roles/storage.objectUser

# `^;^` makes ';' the list separator so the BPF filter may contain commas.
gcloud run deploy "${SERVICE_NAME}" \
  --project="${PROJECT_ID}" --region="${SERVICE_REGION}" \
  --service-account="${SERVICE_ACCOUNT}" \
  --execution-environment=gen2 --no-cpu-throttling --max-instances=2 \
  --container=app --image="${APP_IMAGE}" --port="${APP_PORT}" --depends-on=pcap-sidecar \
  --container=pcap-sidecar --image="${PCAP_IMAGE}" --cpu=1 --memory=1Gi \
  --startup-probe=tcpSocket.port=12345,timeoutSeconds=1,periodSeconds=10,failureThreshold=10 \
  --set-env-vars="^;^PCAP_IFACE=eth;PCAP_GCS_BUCKET=${PCAP_GCS_BUCKET};PCAP_FILTER=${PCAP_FILTER};PCAP_JSON_LOG=true"
