"""ConceptSpace indexing, geometry, image transforms and box covers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from failfade import FailfadeError
from failfade.concepts import Axis, ConceptSpace
from failfade.tasks.classification.transforms import (TRANSFORMS, apply, contrast, darken, gaussian_blur, occlude, rotate,
                                                      saturation)

CONFIG_CONCEPTS = [
    {"name": "rotation", "transform": "rotate", "levels": [0, 10, 20, 30, 40], "unit": "°"},
    {"name": "blur", "transform": "gaussian_blur", "levels": [0, 1, 1.5, 2, 2.5], "unit": "px"},
    {"name": "contrast", "transform": "contrast", "levels": [1, 0.6, 0.4, 0.3, 0.2]},
]


@pytest.fixture
def space() -> ConceptSpace:
    return ConceptSpace.from_config(CONFIG_CONCEPTS, TRANSFORMS)


def small_space(shape) -> ConceptSpace:
    return ConceptSpace([Axis(f"a{k}", "contrast", tuple(float(i) for i in range(n))) for k, n in enumerate(shape)])


# --- indexing ---------------------------------------------------------------------------------

def test_shape_and_cell_count(space):
    assert space.shape == (5, 5, 5)
    assert space.n_cells == 125


def test_index_is_row_major_25i_5j_k(space):
    for i, j, k in itertools.product(range(5), repeat=3):
        assert int(space.index(np.array([[i, j, k]]))[0]) == 25 * i + 5 * j + k


def test_coords_of_flat_index(space):
    coords = space.coords([0, 1, 5, 25, 124, 62])
    assert coords.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [4, 4, 4], [2, 2, 2]]


def test_coords_index_round_trip(space):
    cells = np.arange(space.n_cells)
    assert np.array_equal(space.index(space.coords(cells)), cells)
    assert np.array_equal(space.all_coords(), space.coords(cells))


def test_index_row_major_non_cubic():
    s = small_space((2, 3, 4))
    assert s.n_cells == 24
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        c = int(s.index(np.array([[i, j, k]]))[0])
        assert c == 12 * i + 4 * j + k
        assert s.coords([c])[0].tolist() == [i, j, k]


def test_describe_cell_uses_levels_and_units(space):
    # cell (3, 2, 4): rotation 30°, blur 1.5 px, contrast 0.2
    cell = 25 * 3 + 5 * 2 + 4
    assert space.describe_cell(cell) == "rotation=30°, blur=1.5 px, contrast=0.2"


# --- geometry ---------------------------------------------------------------------------------

def test_neighbours_corner_and_centre(space):
    assert sorted(space.neighbours(0)) == [1, 5, 25]
    centre = 25 * 2 + 5 * 2 + 2
    assert sorted(space.neighbours(centre)) == sorted(
        [centre - 25, centre + 25, centre - 5, centre + 5, centre - 1, centre + 1]
    )
    # (4, 0, 2): one axis at its upper edge, one at its lower edge
    c = 25 * 4 + 0 + 2
    assert sorted(space.neighbours(c)) == sorted([c - 25, c + 5, c - 1, c + 1])


def test_neighbours_are_exactly_l1_distance_one(space):
    d = space.grid_distance()
    for cell in [0, 7, 62, 124, 99]:
        assert sorted(space.neighbours(cell)) == np.flatnonzero(d[cell] == 1).tolist()


def test_grid_distance_is_l1_in_level_steps(space):
    d = space.grid_distance()
    assert d.shape == (125, 125)
    assert np.array_equal(d, d.T)
    assert np.all(np.diag(d) == 0)
    # (0,0,0) to (4,4,4): 12 steps; (1,2,3) to (3,0,3): 2 + 2 + 0 = 4
    assert d[0, 124] == 12
    a = 25 * 1 + 5 * 2 + 3
    b = 25 * 3 + 5 * 0 + 3
    assert d[a, b] == 4
    rng = np.random.default_rng(0)
    for _ in range(50):
        x, y = rng.integers(0, 125, size=2)
        cx, cy = divmod(int(x), 25), divmod(int(y), 25)
        ex = (abs(cx[0] - cy[0]) + abs(cx[1] // 5 - cy[1] // 5) + abs(cx[1] % 5 - cy[1] % 5))
        assert d[x, y] == ex


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [(0.0, 10.0, 5.0), (1.0, 1.0), (3.0, 2.0, 2.0), (0.0, 2.0, 1.0, 3.0)])
def test_non_monotonic_levels_raise(levels):
    with pytest.raises(FailfadeError, match="strictly increasing or decreasing"):
        ConceptSpace([Axis("rotation", "rotate", levels)])


@pytest.mark.parametrize("levels", [(0.0, 1.0, 5.0), (1.0, 0.5, 0.1)])
def test_monotonic_levels_accepted(levels):
    assert ConceptSpace([Axis("x", "contrast", levels)]).n_cells == 3


def test_duplicate_axis_names_raise():
    with pytest.raises(FailfadeError, match="unique"):
        ConceptSpace([Axis("x", "contrast", (0.0, 1.0)), Axis("x", "rotate", (0.0, 1.0))])


def test_no_axes_raise():
    with pytest.raises(FailfadeError):
        ConceptSpace([])


def test_unknown_transform_raises_naming_item():
    items = [dict(CONFIG_CONCEPTS[0]), {"name": "sepia", "levels": [0, 1]}]
    with pytest.raises(FailfadeError, match=r"concepts\[1\]\.transform.*'sepia'"):
        ConceptSpace.from_config(items, TRANSFORMS)


def test_transform_defaults_to_name():
    s = ConceptSpace.from_config([{"name": "darken", "levels": [0, 0.5]}], TRANSFORMS)
    assert s.axes[0].transform == "darken"


# --- transforms -------------------------------------------------------------------------------

def _asymmetric_image(h=15, w=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, h, w, generator=g)


def test_rotate_by_zero_is_identity():
    x = _asymmetric_image()
    assert torch.equal(rotate(x, torch.zeros(2)), x)


def test_rotate_90_matches_rot90_counterclockwise_in_interior():
    # an "L" drawn in the top-left: asymmetric under every rotation and flip
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 2:7] = 1.0
    x[0, 0, 2:5, 2] = 1.0
    r = rotate(x, torch.tensor([90.0]))
    ccw = torch.rot90(x, 1, dims=(2, 3))
    cw = torch.rot90(x, -1, dims=(2, 3))
    assert torch.allclose(r, ccw, atol=1e-4)
    assert not torch.allclose(r, cw, atol=0.1)
    # random image (square, odd size: the centre is a pixel centre): compare the interior only
    y = _asymmetric_image(17, 17)
    ry = rotate(y, torch.tensor([90.0, 90.0]))
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert torch.allclose(ry[inner], torch.rot90(y, 1, dims=(2, 3))[inner], atol=1e-4)
    assert (ry[inner] - torch.rot90(y, -1, dims=(2, 3))[inner]).abs().max() > 0.1


def test_rotate_per_image_angles():
    y = _asymmetric_image(17, 17)
    r = rotate(y, torch.tensor([0.0, 180.0]))
    inner = (slice(None), slice(2, -2), slice(2, -2))
    assert torch.allclose(r[0][inner], y[0][inner], atol=1e-5)
    assert torch.allclose(r[1][inner], torch.flip(y[1], dims=(1, 2))[inner], atol=1e-4)


def test_gaussian_blur_sigma_zero_is_identity():
    x = _asymmetric_image()
    assert torch.equal(gaussian_blur(x, torch.zeros(2)), x)
    # sigma 0 next to a positive sigma in the same batch also leaves that image untouched
    out = gaussian_blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(out[0], x[0], atol=1e-6)
    assert not torch.allclose(out[1], x[1], atol=1e-3)


def test_gaussian_blur_preserves_mean_and_reduces_variance():
    # content away from the border, so replicate padding adds no mass
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 10:22, 10:22] = torch.rand(2, 1, 12, 12, generator=g)
    out = gaussian_blur(x, torch.tensor([1.0, 2.0]))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=1e-4, atol=1e-6)
    v_in, v_out = x.var(dim=(1, 2, 3)), out.var(dim=(1, 2, 3))
    assert torch.all(v_out < v_in)
    assert v_out[1] < v_out[0]  # more blur, less variance


def test_gaussian_blur_of_delta_is_normalised_gaussian():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 10] = 1.0
    sigma = 1.5
    out = gaussian_blur(x, torch.tensor([sigma]))[0, 0]
    r = torch.arange(-10, 11, dtype=torch.float32)
    g1 = torch.exp(-0.5 * (r / sigma) ** 2) * (r.abs() <= 5)  # radius ceil(3 * 1.5) = 5
    g1 = g1 / g1.sum()
    assert torch.allclose(out, g1[:, None] * g1[None, :], atol=1e-6)


def test_contrast_factor_one_identity_zero_flat_mean():
    x = _asymmetric_image()
    assert torch.allclose(contrast(x, torch.ones(2)), x, atol=1e-7)
    flat = contrast(x, torch.zeros(2))
    means = x.mean(dim=(1, 2, 3))
    for b in range(2):
        assert torch.allclose(flat[b], torch.full_like(flat[b], float(means[b])), atol=1e-6)


def test_contrast_half_is_midway_to_mean():
    x = _asymmetric_image()
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    out = contrast(x, torch.tensor([0.5, 0.25]))
    assert torch.allclose(out[0], (m[0] + 0.5 * (x[0] - m[0])), atol=1e-6)
    assert torch.allclose(out[1], (m[1] + 0.25 * (x[1] - m[1])), atol=1e-6)


def test_darken_scales_by_one_minus_amount():
    x = _asymmetric_image()
    out = darken(x, torch.tensor([0.0, 0.3]))
    assert torch.allclose(out[0], x[0])
    assert torch.allclose(out[1], 0.7 * x[1], atol=1e-7)


def test_saturation_matches_torchvision_and_leaves_grey_images():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([1.0, 0.5, 0.0])
    out = saturation(x, f)
    for b in range(3):
        assert torch.allclose(out[b], TF.adjust_saturation(x[b], float(f[b])).clamp(0, 1), atol=1e-6)
    assert torch.allclose(out[2, 0], out[2, 1]) and torch.allclose(out[2, 1], out[2, 2])  # 0: grey
    g = torch.rand(2, 1, 8, 8)
    assert saturation(g, torch.tensor([0.5, 0.7])) is g


@pytest.mark.parametrize("size,fraction,side", [(32, 0.25, 8), (32, 0.5, 16), (10, 0.4, 4), (9, 1 / 3, 3), (20, 0.5, 10)])
def test_occlude_zeros_centred_square(size, fraction, side):
    x = torch.full((1, 1, size, size), 0.7)
    out = occlude(x, torch.tensor([fraction]))[0, 0]
    zero = out == 0
    assert int(zero.sum()) == side * side
    rows = torch.nonzero(zero.any(1)).flatten()
    cols = torch.nonzero(zero.any(0)).flatten()
    assert len(rows) == side and len(cols) == side
    # centred: as many untouched rows above as below
    assert int(rows[0]) == size - 1 - int(rows[-1])
    assert int(cols[0]) == size - 1 - int(cols[-1])
    assert torch.all(out[~zero] == 0.7)


def test_occlude_zero_fraction_leaves_image():
    x = _asymmetric_image()
    assert torch.equal(occlude(x, torch.zeros(2)), x)


# --- apply ------------------------------------------------------------------------------------

def test_apply_cell_zero_is_identity(space):
    x = _asymmetric_image(32, 32)[:, :1]
    assert torch.allclose(apply(space, x.clone(), [0, 0]), x, atol=1e-6)


def test_apply_applies_axes_in_order(space):
    x = _asymmetric_image(32, 32)[:1, :1]
    cell = 25 * 2 + 5 * 3 + 4  # rotation 20, blur 2, contrast 0.2
    expected = contrast(gaussian_blur(rotate(x, torch.tensor([20.0])), torch.tensor([2.0])), torch.tensor([0.2]))
    assert torch.allclose(apply(space, x.clone(), [cell]), expected.clamp(0, 1), atol=1e-6)


def test_apply_per_image_cells_match_separate_application(space):
    x = _asymmetric_image(32, 32)[:, :1]
    c1 = 25 * 3 + 5 * 1 + 2  # rotation 30, blur 1, contrast 0.4
    c2 = 25 * 1 + 5 * 4 + 4  # rotation 10, blur 2.5, contrast 0.2
    both = apply(space, x.clone(), [c1, c2])
    one = apply(space, x[:1].clone(), [c1])
    two = apply(space, x[1:].clone(), [c2])
    # the batched blur truncates every kernel at 3 sigma of the batch's largest sigma, so an
    # image's result depends slightly on its batch companions (see the strict test below)
    assert torch.allclose(both[:1], one, atol=1e-3)
    assert torch.allclose(both[1:], two, atol=1e-3)
    # and the two cells really differ
    assert not torch.allclose(apply(space, x[:1].clone(), [c2]), one, atol=1e-2)


def test_blur_result_independent_of_batch_companions():
    x = _asymmetric_image(32, 32)[:, :1]
    batched = gaussian_blur(x, torch.tensor([1.0, 2.5]))
    alone = gaussian_blur(x[:1], torch.tensor([1.0]))
    assert torch.allclose(batched[:1], alone, atol=1e-6)


def test_apply_clamps_to_unit_interval():
    s = ConceptSpace([Axis("contrast", "contrast", (1.0, 2.0))])
    x = _asymmetric_image()[:1]
    out = apply(s, x.clone(), [1])
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 0).any() and (out == 1).any()


# --- box cover and descriptions ---------------------------------------------------------------

def _check_exact_cover(s: ConceptSpace, cells):
    target = set(int(c) for c in cells)
    union = set()
    for lo, hi in s.box_cover(cells):
        assert np.all(lo <= hi)
        box = set(
            int(s.index(np.array([c]))[0])
            for c in itertools.product(*[range(int(l), int(h) + 1) for l, h in zip(lo, hi)])
        )
        assert box <= target, "a box leaves the set"
        union |= box
    assert union == target


@pytest.mark.parametrize("shape", [(3, 3, 3), (4, 2, 3), (5, 5)])
def test_box_cover_exact_on_random_subsets(shape):
    s = small_space(shape)
    rng = np.random.default_rng(sum(shape))
    for _ in range(15):
        density = rng.uniform(0.1, 0.9)
        cells = np.flatnonzero(rng.random(s.n_cells) < density)
        if len(cells) == 0:
            cells = np.array([0])
        _check_exact_cover(s, cells)


def test_box_cover_of_box_is_one_box(space):
    cells = [c for c in range(125) if space.coords([c])[0][0] >= 3 and space.coords([c])[0][2] <= 1]
    cover = space.box_cover(cells)
    assert len(cover) == 1
    lo, hi = cover[0]
    assert lo.tolist() == [3, 0, 0] and hi.tolist() == [4, 4, 1]


def test_box_cover_exact_on_5x5x5(space):
    rng = np.random.default_rng(7)
    for _ in range(3):
        _check_exact_cover(space, np.flatnonzero(rng.random(125) < 0.3))


def _slab(space, axis, positions):
    return [c for c in range(space.n_cells) if space.coords([c])[0][axis] in positions]


def test_describe_cells_slab(space):
    assert space.describe_cells(_slab(space, 0, {3, 4})) == "rotation ≥ 30°"
    assert space.describe_cells(_slab(space, 0, {0, 1, 2})) == "rotation ≤ 20°"
    # descending contrast axis: the last two positions are the two lowest values
    assert space.describe_cells(_slab(space, 2, {3, 4})) == "contrast ≤ 0.3"
    assert space.describe_cells(_slab(space, 2, {4})) == "contrast = 0.2"
    assert space.describe_cells(_slab(space, 1, {1, 2})) == "1 px ≤ blur ≤ 1.5 px"
    assert space.describe_cells(range(125)) == "every cell"


def test_describe_cells_union(space):
    cells = sorted(set(_slab(space, 0, {3, 4})) | set(_slab(space, 2, {4})))
    text = space.describe_cells(cells)
    assert text in {
        "rotation ≥ 30° or (rotation ≤ 20° and contrast = 0.2)",
        "rotation ≥ 30° or contrast = 0.2",
        "contrast = 0.2 or rotation ≥ 30°",
    }


def test_describe_cells_single_cell(space):
    cell = 25 * 1 + 5 * 2 + 4
    assert space.describe_cells([cell]) == "rotation = 10° and blur = 1.5 px and contrast = 0.2"
