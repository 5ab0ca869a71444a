"""Stage check_params: params.yaml checked whole, before any other stage runs.

Reads:  params.yaml, every key (dvc.yaml tracks the whole file, so any change reruns this stage first)
Writes: data/params.checked   a marker every other stage depends on, the same bytes whenever the file is valid:
                              it orders this check first and reruns nothing
A typo'd key, a wrong type or an out-of-range value stops ``dvc repro`` here with one line naming the key, the
value and what is allowed, before any stage has done any work. Every stage also checks the file itself, so
``python -m stages.<name>`` run alone is just as safe.
"""

from pathlib import Path

from stages.core import atomic, stage

PARAMS: list[str] = []  # the whole file, validated by stage.run before main
OUT = Path("data/params.checked")


def main(p: dict) -> None:
    with atomic.output_file(OUT) as tmp:
        tmp.write_text("params.yaml is valid\n")  # constant: a valid change reruns nothing downstream


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS)
