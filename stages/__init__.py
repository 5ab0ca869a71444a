"""The fastai chapter 4 and 5 pipeline.

The top level holds one module per DVC stage (``python -m stages.<name>``, named as the stage in dvc.yaml) and the
user commands that are not stages. Everything they call lives in the rooms beneath: ``core`` (running a stage,
params and their schema, atomic writes, devices, CPU numerics, dvclive, evaluation, downloads), ``mnist``
(chapter 4), ``pets`` (chapter 5's data and model) and ``learner`` (fastai's Learner). README.md maps them all.

Importing this package first caps the CPU instruction sets (stages/core/cpu.py), so that every stage computes the
same bits on every x86-64 machine; it must happen before numpy or torch is loaded, and ``python -m stages.<name>``
guarantees that order.
"""

from stages.core.cpu import pin_instruction_sets

pin_instruction_sets()
