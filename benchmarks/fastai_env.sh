#!/usr/bin/env bash
# Build .venv-fastai, the benchmark-only environment with fastai 2.8 (never a project dependency), from
# benchmarks/fastai-requirements.lock: every package pinned with hashes, the same torch as the project's lock.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-fastai"
lock="$root/benchmarks/fastai-requirements.lock"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "fastai_env: installing $lock into $venv" >&2
  rm -rf "$venv"
  "${PYTHON:-python3.11}" -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$lock" \
    2> >(grep -v "is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
