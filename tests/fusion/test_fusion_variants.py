"""The Tab. 5 variants, build_fusion and the projector, against formulas written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vega3d.fusion import FUSIONS, GenerativeProjector, build_fusion, list_fusions

DIM = 16
NAMES = ["gated", "only_generative", "add", "channel_concat", "sequence_concat", "cross_attention", "channel_gated",
         "weighted", "instruction_token_gated"]


def streams(shape=(2, 9, DIM), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_the_kept_stable_names_are_all_there():
    assert sorted(NAMES) == list_fusions() == sorted(FUSIONS)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_reported_gate(name):
    sem, gen = streams((3, 2, 9, DIM))
    fusion = build_fusion(name, DIM).eval()  # eval: no dropout (cross_attention)
    fused, gate = fusion(sem, gen, return_gate=True)
    tokens = 18 if name == "sequence_concat" else 9
    assert fused.shape == (3, 2, tokens, DIM)
    assert torch.equal(fusion(sem, gen), fused)
    expected_gate = {"gated": (3, 2, 9), "channel_gated": (3, 2, 9, DIM), "weighted": (3, 2, 9),
                     "instruction_token_gated": (3, 2, 9)}.get(name)
    assert fusion.has_gate == (expected_gate is not None)
    assert (gate is None) if expected_gate is None else tuple(gate.shape) == expected_gate


def test_weight_free_variants():
    sem, gen = streams()
    assert torch.equal(build_fusion("only_generative", DIM)(sem, gen), gen)
    torch.testing.assert_close(build_fusion("add", DIM)(sem, gen), sem + gen)
    fused = build_fusion("sequence_concat", DIM)(sem, gen)
    assert torch.equal(fused[:, :9], sem) and torch.equal(fused[:, 9:], gen)


def test_channel_concat_mlp_option_is_linear_gelu_linear_after_the_norms():
    sem, gen = streams()
    fusion = build_fusion("channel_concat", DIM, mlp=True)
    first, last = fusion.projection[0], fusion.projection[2]
    normed = torch.cat([F.layer_norm(sem, (DIM,), fusion.norm1.weight, fusion.norm1.bias),
                        F.layer_norm(gen, (DIM,), fusion.norm2.weight, fusion.norm2.bias)], -1)
    hidden = normed @ first.weight.T + first.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    torch.testing.assert_close(fusion(sem, gen), hidden @ last.weight.T + last.bias)


def test_weighted_gate_is_the_semantic_share():
    sem, gen = streams()
    fusion = build_fusion("weighted", DIM)
    with torch.no_grad():
        fusion.weight_2d.fill_(0.3)
        fusion.weight_gen.fill_(0.9)
    fused, gate = fusion(sem, gen, return_gate=True)
    torch.testing.assert_close(fused, 0.25 * sem + 0.75 * gen)
    assert torch.allclose(gate, torch.full((2, 9), 0.25))


def test_cross_attention_grid_errors():
    sem, gen = streams((2, 8, DIM))
    with pytest.raises(ValueError, match="N=8 tokens is not a square grid; build it with grid="):
        build_fusion("cross_attention", DIM)(sem, gen)
    with pytest.raises(ValueError, match="built for a 3x3 grid, got N=8"):
        build_fusion("cross_attention", DIM, grid=(3, 3))(sem, gen)
    with pytest.raises(ValueError, match="divisible by num_heads=8"):
        build_fusion("cross_attention", 12)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        build_fusion("cross_attention", DIM, num_layers=0)


@pytest.mark.parametrize("name", ["gated", "channel_concat", "cross_attention", "channel_gated", "weighted",
                                  "instruction_token_gated"])
def test_gradients_reach_every_parameter(name):
    fusion = build_fusion(name, DIM)
    sem, gen = (t.requires_grad_() for t in streams())
    context = torch.randn(2, DIM) if fusion.takes_context else None
    fusion(sem, gen, context=context).square().sum().backward()
    for parameter_name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
    assert sem.grad.abs().sum() > 0 and gen.grad.abs().sum() > 0


@pytest.mark.parametrize("name, options", [("gated", {"preset": "residual"}),
                                           ("instruction_token_gated", {"preset": "paper", "gate_bias": 0.25}),
                                           ("cross_attention", {"num_layers": 3, "grid": [3, 3], "dropout": 0.0}),
                                           ("channel_concat", {"mlp": True}), ("add", {})])
def test_config_rebuilds_an_identical_module(name, options):
    fusion = build_fusion(name, DIM, **options)
    rebuilt = build_fusion(**fusion.config())
    rebuilt.load_state_dict(fusion.state_dict())
    assert rebuilt.config() == fusion.config() == {"name": name, "dim": DIM, **{**rebuilt.options, **options}}
    sem, gen = streams()
    extra = {"context": torch.ones(2, DIM)} if fusion.takes_context else {}
    assert torch.equal(rebuilt(sem, gen, **extra), fusion(sem, gen, **extra))


def test_bad_names_options_and_inputs():
    sem, gen = streams()
    with pytest.raises(ValueError, match="unknown fusion 'concat'; choose from add, channel_concat"):
        build_fusion("concat", DIM)
    with pytest.raises(ValueError, match="fusion 'add' takes no option 'num_layers'; options: none"):
        build_fusion("add", DIM, num_layers=3)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        build_fusion("gated", 0)
    fusion = build_fusion("gated", DIM)
    with pytest.raises(ValueError, match=r"sem and gen must have the same shape \[\.\.\., N, 16\]; got sem \(2, 9, 16\) and gen \(2, 8, 16\)"):
        fusion(sem, gen[:, :8])
    with pytest.raises(ValueError, match=r"gen must have shape \[\.\.\., N, 16\]; got \(2, 9, 8\)"):
        fusion(sem, gen[..., :8])
    with pytest.raises(ValueError, match="must share dtype and device"):
        fusion(sem, gen.double())
    with pytest.raises(TypeError, match="sem must be a torch.Tensor"):
        fusion(sem.numpy(), gen)


def test_generative_projector_is_linear_gelu_linear():
    projector = GenerativeProjector(6, DIM)
    tokens = torch.randn(2, 5, 6)
    first, last = projector[0], projector[2]
    hidden = tokens @ first.weight.T + first.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    torch.testing.assert_close(projector(tokens), hidden @ last.weight.T + last.bias)
    assert (first.in_features, first.out_features, last.out_features) == (6, DIM, DIM)
    assert projector.config() == {"in_dim": 6, "out_dim": DIM}
    with pytest.raises(ValueError, match=r"tokens must have shape \[\.\.\., 6\]; got \(2, 5, 7\)"):
        projector(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        GenerativeProjector(6, 0)
