import numpy as np
import pytest
import torch

from brainllm.errors import ConfigError
from brainllm.model.adapters import ADAPTERS, build_adapter

D, H = 12, 16


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_adapter_maps_frames_and_respects_the_mask(name):
    torch.manual_seed(0)
    adapter = build_adapter({"name": name, "hidden": 32} if name != "linear" else name, D, H).eval()
    frames = torch.randn(3, 4, D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out = adapter(frames, mask)
    assert out.shape == (3, 4, H)
    assert torch.all(out[~mask] == 0)
    # a sample with T=2 gives the same output alone as inside a batch padded to T=4 (variable T works)
    alone = adapter(frames[1:2, :2], mask[1:2, :2])
    torch.testing.assert_close(alone[0], out[1, :2], rtol=1e-5, atol=1e-6)
    # padding content must not leak into real positions
    noisy = frames.clone()
    noisy[~mask] = 1e3
    torch.testing.assert_close(adapter(noisy, mask), out)


def test_mlp_is_the_papers_default_architecture():
    adapter = build_adapter("mlp", 1000, 576)
    linears = [m for m in adapter.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1000, 1000), (1000, 1000), (1000, 576)]
    assert [m.bias is not None for m in linears] == [True, False, False]
    assert abs(float(linears[1].weight.std()) - 0.01) < 0.001
    dropouts = [m.p for m in adapter.net if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.5]


def test_position_embedding_distinguishes_frame_positions():
    adapter = build_adapter({"name": "mlp", "position_embedding": True, "max_frames": 4, "dropout": 0.0}, D, H)
    frames = torch.ones(1, 2, D)
    out = adapter(frames, torch.ones(1, 2, dtype=torch.bool))
    assert not torch.allclose(out[0, 0], out[0, 1])
    with pytest.raises(ValueError, match="max_frames"):
        adapter(torch.ones(1, 5, D), torch.ones(1, 5, dtype=torch.bool))


def test_input_scaler_standardises_with_training_statistics():
    adapter = build_adapter("linear", 3, H)
    train = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    adapter.fit_input_scaler(train)
    torch.testing.assert_close(adapter.input_mean, torch.tensor([2.0, 20.0, 5.0]))
    torch.testing.assert_close(adapter.input_std, torch.tensor([1.0, 10.0, 1.0]))  # constant feature: std 1
    assert "input_mean" in adapter.state_dict()


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ConfigError, match="Unknown adapter"):
        build_adapter("transformer", D, H)
    with pytest.raises(ConfigError, match="no option"):
        build_adapter({"name": "mlp", "hiden": 5}, D, H)
    with pytest.raises(ValueError, match="shape"):
        build_adapter("linear", D, H)(torch.zeros(2, 3, D + 1), torch.ones(2, 3, dtype=torch.bool))
