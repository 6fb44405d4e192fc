from __future__ import annotations

import torch

from training.model import SimpleNN, build_model, for_serving


def test_any_batch_size_gives_ten_scores_per_image() -> None:
    model = SimpleNN((32, 16), dropout=0.0)
    for batch in (1, 7, 64):
        assert model(torch.rand(batch, 1, 28, 28)).shape == (batch, 10)


def test_served_model_answers_probabilities_in_eval_mode() -> None:
    served = for_serving(SimpleNN((32,), dropout=0.5))
    assert not served.training
    x = torch.rand(5, 1, 28, 28)
    probabilities = served(x)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-5)
    assert torch.equal(served(x), probabilities)  # dropout is off: deterministic answers


def test_normalisation_is_inside_the_model() -> None:
    model = SimpleNN((16,), dropout=0.0)
    state = model.state_dict()
    assert torch.isclose(state["mean"], torch.tensor(0.1307)) and torch.isclose(state["std"], torch.tensor(0.3081))


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    first, second, other = (build_model((64, 32), 0.1, seed) for seed in (3, 3, 4))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.state_dict()["layers.1.weight"], other.state_dict()["layers.1.weight"])


def test_hidden_sizes_shape_the_layers() -> None:
    linear = [m for m in SimpleNN((100, 50, 25), 0.0).modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 100), (100, 50), (50, 25), (25, 10)]
