#!/usr/bin/env bash
# Regenerate requirements.lock from requirements.in: every package, transitive ones included, at an exact version
# with the hashes of all its files, resolved for every platform and for Python 3.11 to 3.13 (uv's universal
# resolution from the lowest version that pyproject.toml's requires-python accepts).
# Run it after editing requirements.in; ./with-env rebuilds .venv when the lock changes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.venv-tools
if [ ! -x "$tools/bin/uv" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check uv==0.13.9
fi
compile() { "$tools/bin/uv" pip compile --universal --python-version 3.11 --generate-hashes --no-header --quiet "$@"; }
compile requirements.in -o requirements.lock
# The optional S3 remote support, at the versions the main lock already chose for what they share.
compile requirements-s3.in -c requirements.lock -o requirements-s3.lock
# The benchmark-only fastai environment (never a project dependency): Linux x86-64, like the benchmark machine.
"$tools/bin/uv" pip compile benchmarks/fastai-requirements.in --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --quiet -o benchmarks/fastai-requirements.lock
for lock in requirements.lock requirements-s3.lock benchmarks/fastai-requirements.lock; do
  echo "wrote $lock ($(grep -c '^[a-z]' "$lock") packages)"
done
