"""Spatial patches of nodes: PatchSTG's KD-tree split into equal-size leaves, padded.

``kd_leaves(coords, depth)`` splits the nodes recursively: at each level, sort the part by
one coordinate (latitude first, then longitude, alternating), the first ``floor(n/2)``
nodes go left and the rest right, each part kept in original node order. ``depth`` levels
give ``2**depth`` leaves whose sizes differ by at most one.

Every leaf is then padded to the patch size ``ceil(N / 2**depth)`` so that patches stack
into one tensor. **Padding rule:** a short leaf is filled with the nodes outside it that
are nearest to the leaf's centroid (by Euclidean distance in the coordinate space, ties
by node index), as duplicates of real nodes. PatchSTG pads by the cosine similarity of
the nodes' training series instead; by coordinates needs no training data and no N x N
matrix, so it is stable and scales to any number of nodes.

The layout arrays (PatchSTG's names in brackets):

- ``patch_order`` [reo_all_idx], length ``leaves * patch_size``: the node at each padded
  slot, patch by patch; ``x[..., patch_order, :]`` makes the patched input.
- ``patch_nodes`` [ori_parts_idx], length N: the real nodes, leaf by leaf.
- ``patch_slots`` [reo_parts_idx], length N: the padded slot of each entry of
  ``patch_nodes``; ``out[..., patch_nodes, :] = patched[..., patch_slots, :]`` undoes it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree


def kd_leaves(coords: np.ndarray, depth: int) -> list[np.ndarray]:
    """Node indices of each leaf, in leaf order (see the module docstring)."""
    parts = [np.arange(len(coords))]
    for level in range(depth):
        axis = level % coords.shape[1]
        split: list[np.ndarray] = []
        for part in parts:
            ordered = part[np.argsort(coords[part, axis], kind="stable")]
            half = len(part) // 2
            split += [np.sort(ordered[:half]), np.sort(ordered[half:])]
        parts = split
    return parts


def depth_for(nodes: int, patch_size: int) -> int:
    """The shallowest depth whose leaves hold at most ``patch_size`` nodes."""
    if patch_size <= 0 or nodes <= patch_size:
        return 0
    return math.ceil(math.log2(nodes / patch_size))


def patch_layout(coords: np.ndarray, patch_size: int) -> dict[str, np.ndarray]:
    """The layout arrays for ``coords`` (N x 2) and a target patch size."""
    nodes = len(coords)
    depth = depth_for(nodes, patch_size)
    leaves = kd_leaves(coords, depth)
    size = max(len(leaf) for leaf in leaves)
    tree = cKDTree(coords)
    order = np.empty(len(leaves) * size, dtype=np.int64)
    slots = np.empty(nodes, dtype=np.int64)
    position = 0
    for number, leaf in enumerate(leaves):
        start = number * size
        order[start : start + len(leaf)] = leaf
        slots[position : position + len(leaf)] = np.arange(start, start + len(leaf))
        position += len(leaf)
        missing = size - len(leaf)
        if missing:
            # Ask for enough neighbours that `missing` of them lie outside the leaf.
            _, near = tree.query(coords[leaf].mean(axis=0), k=min(nodes, len(leaf) + missing))
            outside = [int(i) for i in np.atleast_1d(near) if i not in set(leaf.tolist())]
            order[start + len(leaf) : start + size] = outside[:missing]
    return {
        "patch_order": order,
        "patch_nodes": np.concatenate(leaves).astype(np.int64),
        "patch_slots": slots,
    }
