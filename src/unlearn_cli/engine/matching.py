"""Matching each protected class to the most similar surrogate classes by embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def class_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Unit-length mean of the unit-length features of each class."""
    features = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    return F.normalize(sums, dim=1)


@dataclass(frozen=True)
class ClassMatch:
    """Cosine similarity of every protected class (rows) to every surrogate class (columns),
    and the surrogate classes chosen to take part."""

    similarity: torch.Tensor
    selected: list[int]
    nearest: list[list[int]]
    random_extra: list[int]


def match_classes(
    protected_centroids: torch.Tensor,
    surrogate_centroids: torch.Tensor,
    k: int,
    extra_random: int,
    generator: torch.Generator,
) -> ClassMatch:
    """Rank surrogate classes by similarity to each protected class; keep the k nearest of each
    plus ``extra_random`` others at random. When there are no more than k surrogate classes,
    all of them take part."""
    similarity = protected_centroids @ surrogate_centroids.T
    total = similarity.shape[1]
    ranking = similarity.argsort(dim=1, descending=True)
    nearest = [row[:k].tolist() for row in ranking]
    if total <= k:
        return ClassMatch(similarity, list(range(total)), nearest, [])
    chosen = sorted({index for row in nearest for index in row})
    remaining = [index for index in range(total) if index not in set(chosen)]
    order = torch.randperm(len(remaining), generator=generator)[:extra_random]
    extra = sorted(remaining[i] for i in order.tolist())
    return ClassMatch(similarity, sorted(chosen + extra), nearest, extra)
