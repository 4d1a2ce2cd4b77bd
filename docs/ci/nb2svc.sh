#!/usr/bin/env bash
# nb2svc in any CI: the steps of docs/ci/nb2svc.yml as plain shell. Run it in the notebook's repository, in an
# environment holding nb2svc and the notebook's training packages (`python -m pip install nb2svc -r requirements.txt`):
#
#     NOTEBOOK=model.ipynb docs/ci/nb2svc.sh
#
# It stops at the first step that fails, with that step's exit code (docs/ci.md says what each means); build.json,
# verify.json and image.json are what each step reported. Keep the service directory and the JSON files as the job's
# artifacts, and NB2SVC_CACHE_DIR (default ~/.cache/nb2svc) and ~/.cache/uv between runs. NB2SVC_IMAGE_TOOL picks
# the container tool (default: the first of podman, buildah, docker on PATH); BUILD_IMAGE=no leaves the image to a
# later job.
set -euo pipefail

: "${NOTEBOOK:?set NOTEBOOK to the notebook to build}"

nb2svc build "$NOTEBOOK" --json -o service > build.json
echo "built $(jq -r .manifest.name build.json) version $(jq -r .manifest.version build.json) in $(jq -r .service_dir build.json)"

nb2svc verify service --json > verify.json

if [ "${BUILD_IMAGE:-yes}" != no ]; then
    nb2svc image service --json > image.json
    echo "image $(jq -r .tag image.json) ($(jq -r .image_id image.json))"
fi
