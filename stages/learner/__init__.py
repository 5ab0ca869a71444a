"""The learner room: fastai's ``Learner`` written out with PyTorch. One object holds the model, the data, the loss,
the optimiser factory and where it computes; ``fit``, ``fit_one_cycle``, ``fine_tune`` and ``lr_find`` take only
schedule arguments. Beside it: the optimiser and schedules, the learning-rate finder's suggestions, and
interpretation (most confused, top losses)."""

LR_SUGGESTIONS = ("valley", "minimum", "steep")  # what lr_find can suggest (fastai's names)
