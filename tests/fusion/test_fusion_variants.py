"""The Tab. 5 variants, build_fusion and the projector, against formulas written out here."""

from __future__ import annotations

import math

import pytest
import torch

from vega3d.fusion import FUSIONS, GenerativeProjector, build_fusion, list_fusions

DIM = 16
NAMES = ["gated", "only_generative", "add", "channel_concat", "sequence_concat", "cross_attention", "channel_gated"]


def streams(shape=(2, 9, DIM), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_the_kept_stable_names_are_all_there():
    assert sorted(NAMES) == list_fusions() == sorted(FUSIONS)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_reported_gate(name):
    sem, gen = streams((3, 2, 9, DIM))
    fusion = build_fusion(name, DIM)
    fused, gate = fusion(sem, gen, return_gate=True)
    tokens = 18 if name == "sequence_concat" else 9
    assert fused.shape == (3, 2, tokens, DIM)
    assert torch.equal(fusion(sem, gen), fused)
    expected_gate = {"gated": (3, 2, 9), "channel_gated": (3, 2, 9, DIM)}.get(name)
    assert fusion.has_gate == (expected_gate is not None)
    assert (gate is None) if expected_gate is None else tuple(gate.shape) == expected_gate


def test_weight_free_variants():
    sem, gen = streams()
    assert torch.equal(build_fusion("only_generative", DIM)(sem, gen), gen)
    torch.testing.assert_close(build_fusion("add", DIM)(sem, gen), sem + gen)
    fused = build_fusion("sequence_concat", DIM)(sem, gen)
    assert torch.equal(fused[:, :9], sem) and torch.equal(fused[:, 9:], gen)


def test_channel_concat_projects_sem_then_gen():
    sem, gen = streams()
    fusion = build_fusion("channel_concat", DIM)
    linear = fusion.project[0]
    want = sem @ linear.weight[:, :DIM].T + gen @ linear.weight[:, DIM:].T + linear.bias
    torch.testing.assert_close(fusion(sem, gen), want)
    mlp = build_fusion("channel_concat", DIM, mlp=True)
    first, last = mlp.project[0], mlp.project[2]
    hidden = torch.cat([sem, gen], -1) @ first.weight.T + first.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    torch.testing.assert_close(mlp(sem, gen), hidden @ last.weight.T + last.bias)


def test_channel_gated_formula():
    sem, gen = streams()
    fusion = build_fusion("channel_gated", DIM)
    w, b = fusion.gate.weight, fusion.gate.bias
    g = 1 / (1 + torch.exp(-(sem @ w[:, :DIM].T + gen @ w[:, DIM:].T + b)))
    fused, gate = fusion(sem, gen, return_gate=True)
    torch.testing.assert_close(gate, g)
    torch.testing.assert_close(fused, g * sem + (1 - g) * gen)


def hand_cross_attention_block(block, x, memory, position, heads):
    def norm(t, ln):
        mean = t.mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-5) * ln.weight + ln.bias

    q_in, kv = norm(x, block.norm_query) + position, norm(memory, block.norm_memory)
    wq, wk, wv = block.attention.in_proj_weight.chunk(3)
    bq, bk, bv = block.attention.in_proj_bias.chunk(3)
    split = lambda t: t.reshape(*t.shape[:-1], heads, -1).transpose(-2, -3)  # noqa: E731
    q, k, v = split(q_in @ wq.T + bq), split((kv + position) @ wk.T + bk), split(kv @ wv.T + bv)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    attended = (weights @ v).transpose(-2, -3).reshape(x.shape)
    x = x + attended @ block.attention.out_proj.weight.T + block.attention.out_proj.bias
    first, last = block.mlp[0], block.mlp[2]
    hidden = norm(x, block.norm_mlp) @ first.weight.T + first.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return x + hidden @ last.weight.T + last.bias


def hand_grid_code(height, width, dim):
    code = torch.zeros(height * width, dim)
    quarter = dim // 4
    for r in range(height):
        for c in range(width):
            for i in range(quarter):
                omega = 1.0 / 10000 ** (i / quarter)
                code[r * width + c, i] = math.sin(r * omega)
                code[r * width + c, quarter + i] = math.cos(r * omega)
                code[r * width + c, 2 * quarter + i] = math.sin(c * omega)
                code[r * width + c, 3 * quarter + i] = math.cos(c * omega)
    return code


@pytest.mark.parametrize("num_layers, grid, tokens", [(1, None, 9), (3, (2, 3), 6)])
def test_cross_attention_matches_hand_written_blocks(num_layers, grid, tokens):
    torch.manual_seed(0)
    fusion = build_fusion("cross_attention", DIM, num_layers=num_layers, grid=grid)
    assert len(fusion.blocks) == num_layers and fusion.blocks[0].attention.num_heads == 8
    assert fusion.blocks[0].mlp[0].out_features == 4 * DIM
    sem, gen = streams((2, tokens, DIM))
    position = hand_grid_code(*(grid or (3, 3)), DIM)
    x = sem
    for block in fusion.blocks:
        x = hand_cross_attention_block(block, x, gen, position, heads=8)
    torch.testing.assert_close(fusion(sem, gen), x, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("name", ["gated", "channel_concat", "cross_attention", "channel_gated"])
def test_gradients_reach_every_parameter(name):
    fusion = build_fusion(name, DIM)
    sem, gen = (t.requires_grad_() for t in streams())
    fusion(sem, gen).square().sum().backward()
    for parameter_name, parameter in fusion.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
    assert sem.grad.abs().sum() > 0 and gen.grad.abs().sum() > 0


@pytest.mark.parametrize("name, options", [("gated", {"preset": "residual", "instruction_dim": 3}),
                                           ("cross_attention", {"num_layers": 3, "grid": [3, 3]}),
                                           ("channel_concat", {"mlp": True}), ("add", {})])
def test_config_rebuilds_an_identical_module(name, options):
    fusion = build_fusion(name, DIM, **options)
    rebuilt = build_fusion(**fusion.config())
    rebuilt.load_state_dict(fusion.state_dict())
    assert rebuilt.config() == fusion.config() == {"name": name, "dim": DIM, **{**rebuilt.options, **options}}
    sem, gen = streams()
    extra = {"instruction": torch.ones(2, 3)} if "instruction_dim" in options else {}
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
