"""Stage code for the fastai chapter 4 and 5 pipeline.

Each stage is a thin entry module (``python -m stages.<name>``) that reads its declared params, calls the
library modules beside it, and writes its outputs atomically. ``dvc.yaml`` lists, for each stage, exactly the
params keys (``PARAMS`` in the entry module) and the code files it reads; ``tests/test_dvc_yaml.py`` checks it.
"""
