#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for the fastai comparison there (`bash benchmarks/gpu_session.sh fastai`):
# fastai and its pure-Python companions, at benchmarks/fastai-requirements.lock's versions and hashes, into .whl/
# (git-ignored), to travel with the device call (carry: [".whl"]); WHEELS_PYTHON and WHEELS_DIR try it
# for another Python, elsewhere. The rest of what fastai imports (torch,
# torchvision, numpy, pandas, matplotlib, scikit-learn, ...) is in that machine's image, at its own versions.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=benchmarks/fastai-requirements.lock
wanted=$(mktemp)
trap 'rm -f "$wanted"' EXIT
# fastai's requirements as the lock's "via" lines chain them, less spacy's (fastai.text only) and less what the
# machine's image holds (the device tool's KINDS.md, 2026-11-17): fastprogress 1.1 draws its bars with python-fasthtml.
for name in fastai fastcore fastdownload fastprogress fasttransform plum-dispatch beartype python-fasthtml \
  beautifulsoup4 soupsieve httpcore2 httpx2 httptools itsdangerous oauthlib python-dotenv python-multipart starlette \
  truststore tzdata uvicorn watchfiles websockets; do
  # the package's line and its --hash lines, as the lock gives them
  awk -v name="$name" '$0 ~ "^"name"==" {keep = 1} keep && /^ *#/ {keep = 0} keep' "$lock" >> "$wanted"
done
rm -rf "${WHEELS_DIR:-.whl}"  # one version of each: two stop the whole install there
python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes --only-binary=:all: \
  --python-version "${WHEELS_PYTHON:-3.12}" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "${WHEELS_DIR:-.whl}" -r "$wanted" \
  2> >(grep -v "is neither a file nor a directory" >&2)
ls "${WHEELS_DIR:-.whl}"
