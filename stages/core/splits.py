"""Train/validation splits: fastai's RandomSplitter, and a stratified split for small samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy, torch and scikit-learn are imported in the function that needs each: the data stages start seconds faster,
# and a stage's --help, which reads the params schema (it imports this module), answers at once.


def random_split(n_items: int, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """fastai's ``RandomSplitter(valid_pct, seed)``: the first ``int(valid_pct * n)`` of a seeded permutation
    are validation. Same generator and arithmetic, so the same file order gives the book's split."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    order = torch.randperm(n_items).numpy()
    cut = int(valid_pct * n_items)
    return np.sort(order[cut:]), np.sort(order[:cut])


def stratified_split(labels: np.ndarray, valid_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation with every class in the same proportion in both."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, valid = train_test_split(index, test_size=valid_pct, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(valid)
