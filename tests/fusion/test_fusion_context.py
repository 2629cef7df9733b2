"""The instruction-aware gate: what ``context=`` changes, what the fixed gate bias does, and the errors."""

from __future__ import annotations

import pytest
import torch

from vega3d.fusion import AdaptiveGatedFusion, build_fusion, list_fusions

D = 8


def streams(shape=(2, 3, 4, D), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def contexts(batch=2, seed=3):
    return torch.randn(batch, D, generator=torch.Generator().manual_seed(seed))


def plain_gate_of(fusion, preset="reference"):
    """The token gate without the instruction parts, holding the same weights."""
    plain = AdaptiveGatedFusion(D, preset=preset)
    plain.load_state_dict({k: v for k, v in fusion.state_dict().items() if k.split(".")[0] in ("norm_sem", "norm_gen", "gate")})
    return plain


def test_without_context_only_the_fixed_bias_differs_from_the_plain_gate():
    fusion = build_fusion("instruction_token_gated", D)
    plain = plain_gate_of(fusion)
    sem, gen = streams()
    with torch.no_grad():
        plain.gate.bias -= 0.5  # the released gate_bias, applied even without a context
    torch.testing.assert_close(fusion(sem, gen, return_gate=True), plain(sem, gen, return_gate=True))
    zero_bias = build_fusion("instruction_token_gated", D, gate_bias=0.0)
    zero_bias.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(zero_bias(sem, gen), plain_gate_of(fusion)(sem, gen))


def test_context_shifts_every_token_of_a_sample_by_one_scalar():
    fusion = build_fusion("instruction_token_gated", D)
    sem, gen = streams()
    ctx = contexts()
    with torch.no_grad():
        _, gate = fusion(sem, gen, context=ctx, return_gate=True)
        _, no_context = fusion(sem, gen, return_gate=True)
        shift = torch.logit(gate.double()) - torch.logit(no_context.double())  # [B, T, N]
        want = fusion.context_scale * fusion.ctx_projection(fusion.norm_ctx(ctx)).squeeze(-1).double()
    torch.testing.assert_close(shift, want[:, None, None].expand_as(shift), rtol=0, atol=1e-5)
    assert not torch.allclose(shift[0], shift[1])  # two questions, two shifts


def test_a_silent_context_mlp_leaves_the_output_unchanged():
    fusion = build_fusion("instruction_token_gated", D)
    sem, gen = streams()
    with torch.no_grad():
        fusion.ctx_projection[2].weight.zero_()
        fusion.ctx_projection[2].bias.zero_()
    torch.testing.assert_close(fusion(sem, gen, context=contexts()), fusion(sem, gen))
    with torch.no_grad():
        fusion.ctx_projection[2].bias.fill_(1.0)
    assert not torch.allclose(fusion(sem, gen, context=contexts()), fusion(sem, gen))


def test_context_shapes_per_sample_per_frame_and_shared():
    fusion = build_fusion("instruction_token_gated", D)
    sem, gen = streams()
    ctx = contexts()
    per_frame = ctx[:, None].expand(2, 3, D)
    torch.testing.assert_close(fusion(sem, gen, context=per_frame), fusion(sem, gen, context=ctx))
    shared = fusion(sem, gen, context=ctx[0])
    torch.testing.assert_close(shared[0], fusion(sem[:1], gen[:1], context=ctx[:1])[0])
    with pytest.raises(ValueError, match=r"context must have shape \[\*batch, 8\] with batch a prefix of \(2, 3\); got \(3, 8\)"):
        fusion(sem, gen, context=contexts(batch=3))
    with pytest.raises(ValueError, match=r"got \(2, 5\)"):
        fusion(sem, gen, context=torch.randn(2, 5))
    with pytest.raises(TypeError, match="context must be a floating torch.Tensor"):
        fusion(sem, gen, context=torch.ones(2, D, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(set(list_fusions()) - {"instruction_token_gated"}))
def test_fusions_without_a_context_input_reject_one(name):
    sem, gen = streams(shape=(2, 9, D))
    fusion = build_fusion(name, D)
    assert not fusion.takes_context
    with pytest.raises(ValueError, match=f"fusion '{name}' takes no context; use 'instruction_token_gated'"):
        fusion(sem, gen, context=contexts())


def test_context_gradients_reach_the_context_mlp_only_when_given():
    fusion = build_fusion("instruction_token_gated", D)
    sem, gen = streams()
    fusion(sem, gen).sum().backward()
    assert fusion.ctx_projection[0].weight.grad is None and fusion.gate.weight.grad is not None
    ctx = contexts().requires_grad_()
    fusion(sem, gen, context=ctx).square().sum().backward()
    assert fusion.ctx_projection[0].weight.grad.abs().sum() > 0 and fusion.norm_ctx.weight.grad.abs().sum() > 0
    assert ctx.grad.abs().sum() > 0


def test_odd_width_is_an_error():
    with pytest.raises(ValueError, match="dim must be even"):
        build_fusion("instruction_token_gated", 7)
