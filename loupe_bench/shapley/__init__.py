"""Shapley values and coalition interactions: exact enumeration, shared-context Monte-Carlo, neural prediction.

A game is a batched value function ``v(masks[G, Q, n] bool) -> [G, Q]`` (see :mod:`.games`). Usable on its own::

    from loupe_bench.shapley import AndGame, exact_interaction, sample_interaction
    A = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    exact_interaction(AndGame(A), 4, A[:, None])        # tensor([[1.]])
    sample_interaction(AndGame(A), A[:, None], 256)     # InteractionEstimate(mean≈1, stderr, num_evals, ...)
    exact_coalition_value(OrGame(A), 4, A[:, None])     # tensor([[1.]]) — and I([A]) = 1 − |A| = −1
"""
from .estimators import ESTIMATORS, TARGETS, EstimatorConfig, EstimatorOutput, build_estimator
from .exact import all_subsets, exact_coalition_value, exact_interaction, exact_shapley, shapley_weights
from .games import (AdditiveGame, AndGame, AndOrGame, Game, LateInteractionGame, OrGame, PooledCosineGame,
                    PooledRegionPhraseGame, TableGame)
from .neural import NeuralConfig, NeuralInteraction, attenuation_corrected_r, spearman
from .permutation import PlayerValues, permutation_orders, sample_player_values
from .sampling import (
    InteractionEstimate,
    sample_coalition_value,
    sample_coalition_value_subset,
    sample_contexts,
    sample_interaction,
    sample_interaction_subset,
)

__all__ = [
    "PlayerValues",
    "permutation_orders",
    "sample_player_values",
    "ESTIMATORS",
    "TARGETS",
    "EstimatorConfig",
    "EstimatorOutput",
    "build_estimator",
    "all_subsets",
    "exact_coalition_value",
    "exact_interaction",
    "exact_shapley",
    "shapley_weights",
    "AdditiveGame",
    "AndGame",
    "AndOrGame",
    "OrGame",
    "Game",
    "LateInteractionGame",
    "PooledCosineGame",
    "PooledRegionPhraseGame",
    "TableGame",
    "NeuralConfig",
    "NeuralInteraction",
    "attenuation_corrected_r",
    "spearman",
    "InteractionEstimate",
    "sample_coalition_value",
    "sample_coalition_value_subset",
    "sample_contexts",
    "sample_interaction",
    "sample_interaction_subset",
]
