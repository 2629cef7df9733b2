"""AdaptiveGatedFusion against Eq. 7-8 and the released formulas, written out by hand here."""

from __future__ import annotations

import pytest
import torch

from vega3d.fusion import AdaptiveGatedFusion

DIM = 12


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def randomise(module, seed=0):
    """Non-trivial LayerNorm affine parameters, so that a swapped norm or order cannot pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return module


def streams(shape=(2, 3, 5, DIM), seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator) * 3 + 1


def expected(fusion, sem, gen, gen_first, mix_normalized, residual):
    a = layer_norm(sem, fusion.norm_sem.weight, fusion.norm_sem.bias)
    b = layer_norm(gen, fusion.norm_gen.weight, fusion.norm_gen.bias)
    w, bias = fusion.gate.weight[0], fusion.gate.bias[0]
    concat = torch.cat([b, a] if gen_first else [a, b], dim=-1)
    g = torch.sigmoid((concat * w).sum(-1) + bias)
    x, y = (a, b) if mix_normalized else (sem, gen)
    mixed = g[..., None] * x + (1 - g[..., None]) * y
    if residual:
        mixed = sem + fusion.residual_scale * (mixed - sem)
    return mixed, g


@pytest.mark.parametrize(
    "preset, gen_first, mix_normalized, residual",
    [("paper", True, False, False), ("reference", False, True, False), ("residual", False, False, True)],
)
def test_presets_match_hand_formulas(preset, gen_first, mix_normalized, residual):
    fusion = randomise(AdaptiveGatedFusion(DIM, preset=preset))
    sem, gen = streams()
    fused, gate = fusion(sem, gen, return_gate=True)
    want_fused, want_gate = expected(fusion, sem, gen, gen_first, mix_normalized, residual)
    torch.testing.assert_close(gate, want_gate)
    torch.testing.assert_close(fused, want_fused)
    assert gate.shape == sem.shape[:-1] and bool(((gate > 0) & (gate < 1)).all())


def test_concat_order_differs_between_paper_and_reference():
    # The same weights read the streams in opposite order: with the gen half of w zeroed out in the
    # paper layout, the paper gate ignores gen; the reference layout then ignores sem instead.
    paper, reference = AdaptiveGatedFusion(DIM, "paper"), AdaptiveGatedFusion(DIM, "reference")
    reference.load_state_dict(paper.state_dict())
    with torch.no_grad():
        for module in (paper, reference):
            module.gate.weight[0, :DIM] = 0.0
            module.gate.weight[0, DIM:] = torch.linspace(-1, 1, DIM)
    sem, gen = streams()
    other_sem, other_gen = streams(seed=7)  # fresh tokens (LN would hide a mere rescaling)
    gate_paper = paper(sem, gen, return_gate=True)[1]
    gate_reference = reference(sem, gen, return_gate=True)[1]
    torch.testing.assert_close(paper(sem, other_gen, return_gate=True)[1], gate_paper)
    torch.testing.assert_close(reference(other_sem, gen, return_gate=True)[1], gate_reference)
    assert not torch.allclose(paper(other_sem, gen, return_gate=True)[1], gate_paper)
    assert not torch.allclose(reference(sem, other_gen, return_gate=True)[1], gate_reference)


def test_residual_scale_is_learnable_and_starts_at_0_2():
    fusion = AdaptiveGatedFusion(DIM, preset="residual")
    assert isinstance(fusion.residual_scale, torch.nn.Parameter)
    assert fusion.residual_scale.item() == pytest.approx(0.2)
    assert "residual_scale" not in dict(AdaptiveGatedFusion(DIM).named_parameters())


@pytest.mark.parametrize("preset", ["paper", "reference", "residual"])
def test_gradients_reach_gate_norms_and_both_streams(preset):
    fusion = AdaptiveGatedFusion(DIM, preset=preset)
    sem, gen = (t.requires_grad_() for t in streams())
    fusion(sem, gen).square().sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert sem.grad.abs().sum() > 0 and gen.grad.abs().sum() > 0


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown gated-fusion preset 'released'; choose from paper, reference, residual"):
        AdaptiveGatedFusion(DIM, preset="released")
