"""The fastai chapter 4 and 5 pipeline.

The top level holds one module per DVC stage (``python -m stages.<name>``, named as the stage in dvc.yaml) and the
user commands that are not stages. Everything they call lives in the rooms beneath: ``core`` (running a stage,
params and their schema, atomic writes, devices, dvclive, evaluation, downloads), ``mnist`` (chapter 4),
``pets`` (chapter 5's data and model) and ``learner`` (fastai's Learner). README.md maps every stage and room.
"""
