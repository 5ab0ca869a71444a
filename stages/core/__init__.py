"""The core room: running a stage (--help, one-line errors), params.yaml and its schema, atomic writes, devices and
precision, dvclive logging, checkpoints, evaluation figures, downloads and splits."""
