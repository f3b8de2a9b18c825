"""Per-patch Shapley values by permutations and the map-based box targets of LOUPE's region head."""
import itertools

import pytest
import torch

from loupe_bench.models.region_geometry import excess_map, grid_rectangles, map_targets, pairwise_iou
from loupe_bench.shapley import AdditiveGame, AndGame, OrGame, exact_shapley
from loupe_bench.shapley import permutation_orders, sample_player_values


def test_orders_are_permutations_in_antithetic_pairs():
    orders = permutation_orders(3, 7, 4, torch.Generator().manual_seed(0))
    assert orders.shape == (3, 8, 7)
    assert torch.equal(orders.sort(-1).values, torch.arange(7).expand(3, 8, 7))
    assert torch.equal(orders[:, 1::2], orders[:, 0::2].flip(-1))


@pytest.mark.parametrize("make", [AndGame, OrGame])
def test_player_values_match_exact_shapley(make):
    coal = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    game = make(coal)
    est = sample_player_values(game, 2, 6, pairs=3000, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(est.mean, exact_shapley(game, 6, 2), atol=0.02)
    # efficiency holds for every estimate, whatever the number of orders
    one = sample_player_values(game, 2, 6, pairs=1, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(one.mean.sum(-1), one.full - one.empty)
    assert one.num_evals == 2 * 2 * 7


def test_additive_game_is_exact_with_one_order():
    w = torch.tensor([[0.5, -1.0, 2.0, 0.0, 3.0]])
    est = sample_player_values(AdditiveGame(w), 1, 5, pairs=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est.mean, w.double())


def test_player_values_against_a_naive_loop_over_one_order():
    """The batched prefixes give, for a fixed order, the marginals a plain loop computes."""
    torch.manual_seed(0)
    table = torch.randn(1, 2 ** 4)

    def game(masks):
        idx = (masks.long() * (2 ** torch.arange(4))).sum(-1)
        return table[0][idx]

    gen = torch.Generator().manual_seed(5)
    est = sample_player_values(game, 1, 4, pairs=1, generator=gen)
    orders = permutation_orders(1, 4, 1, torch.Generator().manual_seed(5))[0]
    ref = torch.zeros(4, dtype=torch.float64)
    for order in orders:
        have = torch.zeros(1, 1, 4, dtype=torch.bool)
        for p in order.tolist():
            before = float(game(have))
            have[..., p] = True
            ref[p] += float(game(have)) - before
    assert torch.allclose(est.mean[0], ref / 2)


def test_grid_rectangles_are_every_rectangle_once():
    boxes, members = grid_rectangles((3, 4))
    assert boxes.shape[0] == 6 * 10 == members.shape[0]
    want = set()
    for r0, r1 in itertools.combinations_with_replacement(range(3), 2):
        for c0, c1 in itertools.combinations_with_replacement(range(4), 2):
            want.add(frozenset(r * 4 + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)))
    got = {frozenset(torch.nonzero(m).flatten().tolist()) for m in members}
    assert got == want
    # a rectangle's box is the outline of its member patches
    for b, m in zip(boxes, members):
        idx = torch.nonzero(m).flatten()
        rows, cols = idx // 4, idx % 4
        assert torch.allclose(b, torch.tensor([cols.min() / 4, rows.min() / 3, (cols.max() + 1) / 4,
                                               (rows.max() + 1) / 3]))


def test_iou_against_a_naive_loop():
    a = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.2, 0.1, 0.9, 0.7]]])
    b = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 1.0, 1.0]])
    got = pairwise_iou(a, b)
    for i in range(2):
        for j in range(2):
            x0, y0 = max(a[0, i, 0], b[j, 0]), max(a[0, i, 1], b[j, 1])
            x1, y1 = min(a[0, i, 2], b[j, 2]), min(a[0, i, 3], b[j, 3])
            inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
            area = lambda q: float((q[2] - q[0]) * (q[3] - q[1]))  # noqa: E731
            assert abs(float(got[0, i, j]) - inter / (area(a[0, i]) + area(b[j]) - inter)) < 1e-6


def test_map_targets_find_a_planted_object_of_any_size():
    """An OR object (any patch is enough) gives each of its k patches φ = 1/k: the best rectangle near a box is the
    object's extent, for a 2-patch and a 12-patch object alike, while a coalition value would peak at one patch."""
    for rows, cols in (((2, 2), (1, 2)), ((1, 3), (3, 6))):
        obj = torch.zeros(1, 64, dtype=torch.bool)
        for r in range(rows[0], rows[1] + 1):
            for c in range(cols[0], cols[1] + 1):
                obj[0, r * 8 + c] = True
        phi = obj.double() / obj.sum()  # the Shapley values of OrGame(obj), as the exact test above checks
        pmap = excess_map(phi)
        truth = torch.tensor([cols[0] / 8, rows[0] / 8, (cols[1] + 1) / 8, (rows[1] + 1) / 8])
        size = (truth[2:] - truth[:2]).repeat(2)
        near = truth + 0.2 * size * torch.tensor([1.0, -1.0, 1.5, 0.5])
        target, score = map_targets(near.clamp(0, 1)[None, None], pmap.float(), (8, 8), 0.3)
        assert torch.allclose(target[0, 0], truth)
        assert float(score) == pytest.approx(float(pmap[obj].sum()), abs=1e-6)


def test_map_targets_stay_near_their_box():
    """Two objects: each box goes to the one it overlaps; a box on background shrinks rather than jumping away."""
    pmap = torch.full((1, 64), -0.1)
    pmap[0, [0, 1, 8, 9]] = 1.0  # top-left 2x2
    pmap[0, [54, 55, 62, 63]] = 0.5  # bottom-right 2x2, weaker
    boxes = torch.tensor([[[0.0, 0.0, 0.3, 0.3], [0.7, 0.7, 1.0, 1.0], [0.375, 0.375, 0.625, 0.625]]])
    target, _ = map_targets(boxes, pmap, (8, 8), 0.3)
    assert torch.allclose(target[0, 0], torch.tensor([0.0, 0.0, 0.25, 0.25]))
    assert torch.allclose(target[0, 1], torch.tensor([0.75, 0.75, 1.0, 1.0]))
    assert float((target[0, 2, 2:] - target[0, 2, :2]).prod()) < 0.25 * 0.25 + 1e-6
