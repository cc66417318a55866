#!/usr/bin/env bash
# cloudrun-deploy.sh - roll the Cloud Run service to a new broker image and
# check that it serves. Cloud Build's "deploy" step; `make cloudrun-deploy`
# runs the same thing from a workstation with gcloud.
#
# Only the image changes: the service account, BROKER_CONFIG and scaling stay
# as Terraform set them (the module ignores image drift for this reason).
#
# Environment: PROJECT, REGION, SERVICE; IMAGE, or IMAGE_REF_FILE holding the
# reference `ko build --image-refs` wrote (default image.ref).
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${SERVICE:?set SERVICE}"
image=${IMAGE:-}
if [[ -z $image ]]; then
	ref_file=${IMAGE_REF_FILE:-image.ref}
	[[ -s $ref_file ]] || { echo "cloudrun-deploy: no IMAGE and no $ref_file" >&2; exit 1; }
	image=$(head -n1 "$ref_file")
fi
echo "cloudrun-deploy: $SERVICE ($PROJECT/$REGION) -> $image"
gcloud run services update "$SERVICE" --project="$PROJECT" --region="$REGION" --image="$image" --quiet
url=$(gcloud run services describe "$SERVICE" --project="$PROJECT" --region="$REGION" --format='value(status.url)')
# /healthz needs no auth and answers 200 once the policy has loaded.
for i in 1 2 3 4 5 6; do
	if curl -fsS -o /dev/null "$url/healthz"; then
		echo "cloudrun-deploy: $url/healthz OK"
		exit 0
	fi
	sleep $((i * 5))
done
echo "cloudrun-deploy: $url/healthz did not answer 200" >&2
exit 1
