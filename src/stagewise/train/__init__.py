"""The multi-dataset trainer (seed 003): ``stagewise.train.recipe.train(config)``.

Importing this package loads nothing heavy; the recipe and its modules import torch.
"""
