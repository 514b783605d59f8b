"""The `augment` config group: data augmentation of training batches.

Transforms come from torchvision.transforms.v2 and run on whole batches on the
device, so augmentation adds no per-sample Python work. A consequence worth
knowing: v2.RandomAffine draws ONE angle/shift/zoom per call, so all images of
a batch share it (a fresh draw every batch, 10 per epoch by default); Gaussian
noise is drawn per pixel. Evaluation data is never augmented: the loop only
calls the augmentation on training batches.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.transforms import v2

from hreg.data import BACKGROUND


def build_augment(
    noise_sigma: float = 0.0,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: Sequence[float] = (1.0, 1.0),
) -> v2.Transform | None:
    """A batch transform, or None when nothing is switched on.

    ``noise_sigma`` is in units of the normalised input (its std is 1);
    ``degrees`` is the largest rotation either way; ``translate`` the largest
    shift as a fraction of the image side; ``scale`` the zoom range. Areas moved
    into view are filled with the background (a black pixel).
    """
    transforms: list[v2.Transform] = []
    if degrees > 0 or translate > 0 or tuple(scale) != (1.0, 1.0):
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
    return v2.Compose(transforms) if transforms else None
