#!/usr/bin/env bash
# The unit tests' mutation score over stages/core, stages/learner and stages/pets/augment.py. mutmut 3.8 (pinned in
# requirements.lock as a development tool, configured in pyproject.toml's [tool.mutmut]) changes those files one small
# edit at a time and runs, for each such mutant, the unit tests that call the function it changed. Prints, per target
# and overall, killed / (total - equivalent): a mutant is killed when a test fails (or times out) with it; one listed in
# tools/mutation-equivalent.txt, with the reason it cannot change behaviour, leaves the count unless a test kills it.
# Survivors are measured against the unit tests only ([tool.mutmut] says which); the default suite contains them all.
#
#   ./with-env bash tools/mutation.sh           run every mutant afresh (hours on two busy cores), then the score
#   ./with-env bash tools/mutation.sh --score   the score of the last run in mutants/, running nothing
#
# MUTATION_CHILDREN (default 2) mutants run at once; MUTATION_MIN, when set (say 85), makes a lower score exit 1.
# mutants/ (mutmut's copy of the project and its results) stays in the repository root: `mutmut show NAME` prints a
# mutant's diff, `mutmut run NAME...` reruns some (new tests are found and added to the test selection first).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode="${1:-run}"
case "$mode" in
  run | --score) ;;
  *) echo "usage: tools/mutation.sh [--score]" >&2; exit 2 ;;
esac

export DVC_NO_ANALYTICS=1 PIPELINE_PROGRESS=off
# One intra-op thread per test process: mutmut runs MUTATION_CHILDREN of them, and torch's threads would oversubscribe
# the cores (a mutant's tests only get slower, never different: no unit test depends on the thread count).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ "$mode" = run ]; then
  # Afresh: mutmut's incremental mode keeps earlier verdicts, and a result must not depend on what ran before.
  rm -rf mutants
  mkdir -p mutants
  log=mutants/mutmut-run.log
  echo "mutation: mutmut run, log in $log" >&2
  if ! mutmut run --max-children "${MUTATION_CHILDREN:-2}" > "$log" 2>&1; then
    tr '\r' '\n' < "$log" | tail -n 40 >&2
    echo "mutation: mutmut run failed; see $log" >&2
    exit 1
  fi
fi
[ -d mutants ] || { echo "mutation: no mutants/ to score; run without --score first" >&2; exit 1; }

mutmut results --all true > mutants/mutmut-results.txt
python - tools/mutation-equivalent.txt mutants/mutmut-results.txt <<'PY'
"""Score the lines of `mutmut results --all true` ("    <mutant>: <status>") per target."""

import os
import re
import sys
from collections import Counter

equivalent = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, _, reason = line.partition("#")
    if name.strip():
        equivalent[name.strip()] = reason.strip()

TARGETS = {"core": "stages.core.", "learner": "stages.learner.", "augment": "stages.pets.augment."}
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
counts = {target: Counter() for target in TARGETS}
survivors, wrong_equivalents, timeouts, seen = [], [], [], set()
for line in open(sys.argv[2], encoding="utf-8"):
    match = re.fullmatch(r"\s*(\S+): (.+)", line.rstrip("\n"))
    target = next((t for t, prefix in TARGETS.items() if match and match[1].startswith(prefix)), None)
    if target is None:
        continue
    name, status = match.groups()
    seen.add(name)
    c = counts[target]
    if status == "not checked":  # an interrupted run: left out of the score, and said so below
        c["not checked"] += 1
        continue
    c["total"] += 1
    if status in KILLED:
        c["killed"] += 1
        wrong_equivalents += [name] if name in equivalent else []
        timeouts += [name] if status == "timeout" else []
    elif name in equivalent:
        c["equivalent"] += 1
    else:
        c[status] += 1
        survivors.append(f"{status}: {name}")


def line_for(label: str, c: Counter) -> tuple[float, str]:
    scored = c["total"] - c["equivalent"]
    score = 100 * c["killed"] / scored if scored else 0.0
    rest = "".join(f", {k} {v}" for k, v in sorted(c.items()) if k not in ("total", "killed", "equivalent"))
    return score, f"{label:8} {score:5.1f}%  killed {c['killed']} of {scored} (mutants {c['total']}, equivalent {c['equivalent']}{rest})"


for entry in survivors:
    print(f"  not killed, {entry}")
for name in timeouts:
    print(f"  timed out (counted as killed; `mutmut run {name}` on an idle machine confirms it)")
for name in wrong_equivalents:
    print(f"  listed as equivalent but killed, remove it from tools/mutation-equivalent.txt: {name}")
for name in sorted(set(equivalent) - seen):
    print(f"  listed as equivalent but no such mutant (the code changed; review the list): {name}")
for target, c in counts.items():
    print(line_for(target, c)[1])
score, text = line_for("overall", sum(counts.values(), Counter()))
print(text)
if any(c["not checked"] for c in counts.values()):
    print("mutation: some mutants were not checked (an interrupted run): the score covers the checked ones only")
minimum = os.environ.get("MUTATION_MIN")
if minimum and score < float(minimum):
    print(f"mutation: score {score:.1f}% is below MUTATION_MIN={minimum}%", file=sys.stderr)
    sys.exit(1)
PY
