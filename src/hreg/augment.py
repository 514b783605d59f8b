"""The `augment` config group: data augmentation of training batches.

Transforms come from torchvision.transforms.v2 and run on whole batches on the
device, so augmentation adds no per-sample Python work. A consequence worth
knowing: v2.RandomAffine draws ONE angle/shift/zoom per call, so all images of
a batch share it (a fresh draw every batch, 10 per epoch by default); Gaussian
noise is drawn per pixel. Evaluation data is never augmented: the loop only
calls the augmentation on training batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hreg.data import BACKGROUND

#: A batch transform: (N, 1, 28, 28) normalised images in, the same shape out.
Augment = Callable[[torch.Tensor], torch.Tensor]


def build_augment(
    noise_sigma: float = 0.0,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
) -> Augment | None:
    """A batch transform, or None when nothing is switched on.

    ``noise_sigma`` is in units of the normalised input (its std is 1);
    ``degrees`` is the largest rotation either way; ``translate`` the largest
    shift as a fraction of the image side; ``scale`` the zoom range. Areas moved
    into view are filled with the background (a black pixel).
    """
    geometric = degrees > 0 or translate > 0 or tuple(scale) != (1.0, 1.0)
    if not geometric and noise_sigma <= 0:
        return None
    from torchvision.transforms import v2  # only runs that augment pay for importing torchvision

    transforms: list[v2.Transform] = []
    if geometric:
        transforms.append(
            v2.RandomAffine(
                degrees=degrees,
                translate=(translate, translate) if translate > 0 else None,
                scale=tuple(scale),
                fill=BACKGROUND,
            )
        )
    if noise_sigma > 0:
        transforms.append(v2.GaussianNoise(sigma=noise_sigma, clip=False))
    return v2.Compose(transforms)
