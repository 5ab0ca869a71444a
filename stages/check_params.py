"""Stage check_params: params.yaml checked whole, before any other stage runs.

Reads:  params.yaml, every key (dvc.yaml tracks the whole file, so any change reruns this stage first)
Writes: data/params.checked   a marker every other stage depends on, the same bytes whenever the file is valid:
                              it orders this check first and reruns nothing
A typo'd key, a wrong type or an out-of-range value stops ``dvc repro`` here with one line naming the key, the
value and what is allowed, before any stage has done any work. Every stage also checks the blocks it reads, so
``python -m stages.<name>`` run alone never works from a bad value either.
"""

from pathlib import Path

from stages.core import atomic, stage
from stages.core.schema import CORE
from stages.learner import schema as learner_schema
from stages.mnist import schema as mnist_schema
from stages.pets import schema as pets_schema

SCHEMA = CORE | mnist_schema.SCHEMA | pets_schema.SCHEMA | learner_schema.SCHEMA  # every block of params.yaml
PARAMS: list[str] = []  # the whole file, validated by stage.run before main
OUT = Path("data/params.checked")


def main(p: dict) -> None:
    with atomic.output_file(OUT) as tmp:
        tmp.write_text("params.yaml is valid\n")  # constant: a valid change reruns nothing downstream


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA, whole=True)
