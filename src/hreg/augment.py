"""The `augment` config group: random transforms of training batches, on the device.

- Affine: a rotation (+-``degrees``), a shift (+-``translate`` of the side) and a
  zoom (``scale`` range), drawn for every image (``per_image: true``, the
  default) or once per batch (``per_image: false``, shared by its images).
  Areas moved into view are black.
- Elastic distortion (Simard, Steinkraus and Platt, 2003): a random displacement
  field per image, uniform in [-1, 1] per pixel, smoothed by a Gaussian of
  ``elastic_sigma`` pixels and scaled by ``elastic_alpha`` pixels. It is drawn in
  the smoothing's own basis (``_elastic_basis``), where the blur keeps only a few
  directions: the same mean and covariance, from about a tenth of the draws.
- Gaussian noise of ``noise_sigma`` on every pixel (in units of the normalised
  input, whose std is 1).

The geometric transforms are one sampling grid per image (``affine_grid``, plus
the elastic field) and one bilinear ``grid_sample`` for the whole batch, so
nothing loops over images. The transform works on a stack of members, images
shaped (members, batch, 1, 28, 28), each member with its own strengths: the
stacked launcher augments every run of a stack in one call, and a single run is
a stack of one. Evaluation data is never augmented: only the training loop
calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hreg.data import BACKGROUND

#: A batch transform: (N, 1, 28, 28) normalised images in, the same shape out.
Augment = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AugmentSettings:
    """One run's augmentation, as its config gives it."""

    noise_sigma: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    per_image: bool = True
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0

    def __post_init__(self) -> None:  # plain numbers, whatever the config gave (ints, ListConfig)
        for name in ("noise_sigma", "degrees", "translate", "elastic_alpha", "elastic_sigma"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))
        object.__setattr__(self, "per_image", bool(self.per_image))

    @property
    def affine(self) -> bool:
        return self.degrees > 0 or self.translate > 0 or tuple(self.scale) != (1.0, 1.0)

    @property
    def elastic(self) -> bool:
        return self.elastic_alpha > 0

    @property
    def active(self) -> bool:
        return self.affine or self.elastic or self.noise_sigma > 0


def _smoothing_matrices(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    """(len(sigmas), size, size): M @ v is v convolved with a normalised Gaussian (3 sigma wide), zero-padded.

    Smoothing a field as ``M_h @ field @ M_w.T`` is the separable Gaussian blur as two small
    matrix products, each member with its own sigma, and far faster than ``conv2d`` on a CPU.
    """
    offsets = torch.arange(size, dtype=sigmas.dtype, device=sigmas.device)
    distance = offsets[:, None] - offsets[None, :]
    radius = torch.ceil(3 * sigmas).view(-1, 1, 1)
    weights = torch.exp(-0.5 * (distance / sigmas.view(-1, 1, 1).clamp_min(1e-3)) ** 2) * (distance.abs() <= radius)
    taps = torch.arange(-size, size + 1, dtype=sigmas.dtype, device=sigmas.device)
    norm = (torch.exp(-0.5 * (taps / sigmas.view(-1, 1).clamp_min(1e-3)) ** 2) * (taps.abs() <= radius.view(-1, 1))).sum(1)
    return weights / norm.view(-1, 1, 1)


#: The share of a smoothed field's variance the elastic basis may leave out: its amplitude is then
#: within 0.5% of the full field's (the rank this needs is 8 for a sigma of 4 pixels, 10 for 3).
ELASTIC_TOLERANCE = 1e-4


def _elastic_basis(sigmas: torch.Tensor, size: int) -> torch.Tensor:
    """(len(sigmas), size, rank): B such that ``B @ G @ B.T``, for G uniform in [-1, 1] (rank x rank),
    has the mean and covariance of a (size x size) uniform field blurred by ``M @ F @ M.T``.

    With M = U S V^T, the blurred field is (U S) (V^T F V) (U S)^T, and V^T F V has uncorrelated
    entries of F's variance (V is orthogonal), so drawing G in its place keeps the field's mean and
    covariance. The blur leaves little variance beyond its first singular directions, so only a few are
    kept: the fewest whose left-out variance, over both axes, is within ELASTIC_TOLERANCE for every sigma.
    """
    u, s, _ = torch.linalg.svd(_smoothing_matrices(sigmas.cpu().double(), size))  # once per stack, in float64
    kept = (s**2).cumsum(1) / (s**2).sum(1, keepdim=True)
    rank = int((1 - kept**2 > ELASTIC_TOLERANCE).sum(1).max()) + 1
    return (u * s[:, None, :])[..., :min(rank, size)].to(sigmas)


class BatchAugment:
    """Random transforms of (members, batch, 1, H, W) images, each member with its own settings.

    Called on (batch, 1, H, W) images, it augments them as a stack of one.
    """

    def __init__(self, settings: Sequence[AugmentSettings]) -> None:
        self.settings = list(settings)
        self._on: torch.device | None = None

    def __len__(self) -> int:
        return len(self.settings)

    def keep(self, members: Sequence[int]) -> BatchAugment:
        """The same transform for a subset of the members (a stack that lost some)."""
        return BatchAugment([self.settings[i] for i in members])

    def _tensors(self, device: torch.device, h: int, w: int) -> None:
        """Per-member strengths as tensors on ``device`` (made once), for the members each transform touches."""
        if self._on == (device, h, w):
            return
        s = self.settings

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        def members(test: Callable[[AugmentSettings], bool]) -> list[int]:
            return [i for i, x in enumerate(s) if test(x)]

        self.moved = members(lambda x: x.affine or x.elastic)  # the members whose images are resampled
        self.moved_index = torch.tensor(self.moved, dtype=torch.long, device=device)
        moved = [s[i] for i in self.moved]
        self.radians = column([math.radians(x.degrees) for x in moved])
        self.shift = column([2 * x.translate for x in moved])  # the side is 2 in grid coordinates
        self.zoom_low = column([x.scale[0] for x in moved])
        self.zoom_span = column([x.scale[1] - x.scale[0] for x in moved])
        self.per_image = torch.tensor([x.per_image for x in moved], device=device)
        alpha = column([x.elastic_alpha for x in moved])  # 0 for a member without elastic distortion
        to_grid = column([2 / w, 2 / h])  # from pixels to grid units (the side is 2), for x and y
        self.any_elastic = any(x.elastic for x in moved)
        if self.any_elastic:
            sigmas = column([x.elastic_sigma for x in moved])
            scale = (alpha[:, None] * to_grid).view(-1, 2, 1, 1)  # (k, axis, 1, 1): alpha pixels, in grid units
            self.basis_h = _elastic_basis(sigmas, h)[:, None] * scale  # (k, axis, h, rank), scaled
            self.basis_w = _elastic_basis(sigmas, w)  # (k, w, rank)
        self.all_per_image = all(x.per_image for x in moved)
        self.noise = column([x.noise_sigma for x in s])
        self.any_noise = any(x.noise_sigma > 0 for x in s)
        self._on = (device, h, w)

    def _draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniform draws in [0, 1), one set per image; a per-batch member's images share its first image's."""
        u = torch.rand(shape, device=device)
        if self.all_per_image:
            return u
        keep_own = self.per_image.view(-1, *([1] * (len(shape) - 1)))
        return torch.where(keep_own, u, u[:, :1].expand_as(u))

    def _grid(self, k: int, b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Sampling grids (k, b, h, w, 2) of the moved members: where each output pixel reads from.

        A random rotation, shift and zoom (output pixel p reads input pixel R(-angle) (p - shift) / zoom,
        the inverse of zoom, rotate, shift), plus the elastic displacement where it is on. In
        ``affine_grid``'s coordinates (align_corners=False), written out: on a CPU that is far faster
        than its batched matrix product of 3 x 2 matrices. Each coordinate is a plane (k, b, 2, h, w),
        a constant per row plus a multiple of x, made in one pass; the grid is a view of the planes.
        """
        u = self._draw((k, b, 5), device)
        angle = (2 * u[..., 0] - 1) * self.radians[:, None]
        shift_x, shift_y = ((2 * u[..., 1:3] - 1) * self.shift[:, None, None]).unbind(-1)
        zoom = self.zoom_low[:, None] + u[..., 3] * self.zoom_span[:, None]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # (k, b)
        xs = (torch.arange(w, device=device) * 2 + 1) / w - 1
        ys = (torch.arange(h, device=device) * 2 + 1) / h - 1
        dy = ys - shift_y[..., None]  # (k, b, h)
        # x' = cos (x - sx) + sin (y - sy), y' = cos (y - sy) - sin (x - sx): per row, a constant plus slope * x
        row = torch.stack([sin[..., None] * dy - (cos * shift_x)[..., None],
                           cos[..., None] * dy + (sin * shift_x)[..., None]], dim=2)  # (k, b, 2, h)
        slope = torch.stack([cos, -sin], dim=2)  # (k, b, 2)
        planes = torch.addcmul(row[..., None], slope[..., None, None], xs)  # (k, b, 2, h, w)
        if self.any_elastic:
            planes += self._elastic_field(k, b, device)
        return planes.permute(0, 1, 3, 4, 2)

    def _elastic_field(self, k: int, b: int, device: torch.device) -> torch.Tensor:
        """Displacements (k, b, 2, h, w) in grid units: uniform noise smoothed per member's sigma, times alpha."""
        draws = 2 * self._draw((k, b, 2, self.basis_h.shape[-1], self.basis_w.shape[-1]), device) - 1
        # B_h G B_w^T per image and axis: the Gaussian blur of each member's own sigma, times its alpha
        return torch.einsum("kahr,kbars,kws->kbahw", self.basis_h, draws, self.basis_w)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        single = x.dim() == 4
        if single:
            x = x.unsqueeze(0)
        self._tensors(x.device, *x.shape[-2:])
        if self.moved:
            k, b, c, h, w = len(self.moved), *x.shape[1:]
            grid = self._grid(k, b, h, w, x.device)
            everyone = k == len(x)  # then no gathering and scattering of the moved members' images
            # Sampled around the background, so that what comes into view is black.
            source = (x if everyone else x.index_select(0, self.moved_index)) - BACKGROUND
            moved = F.grid_sample(source.view(k * b, c, h, w), grid.flatten(0, 1),
                                  mode="bilinear", padding_mode="zeros", align_corners=False)
            moved = moved.view(k, b, c, h, w).add_(BACKGROUND)
            x = moved if everyone else x.index_copy(0, self.moved_index, moved)
        if self.any_noise:
            x = x + self.noise.view(-1, 1, 1, 1, 1) * torch.randn_like(x)
        return x[0] if single else x


def build_augment(**settings: float | bool | Sequence[float]) -> BatchAugment | None:
    """The run's batch transform from the group's keys (AugmentSettings' fields), or None when nothing is on."""
    augment = AugmentSettings(**settings)
    return BatchAugment([augment]) if augment.active else None
