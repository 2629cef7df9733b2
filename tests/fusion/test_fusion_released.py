"""Every released fusion module (REFERENCE-SR.md section 4) against an independent re-implementation.

The reference functions below are written from the fact sheet with plain tensor ops and read their
weights from a dict keyed by the *released* state-dict names. The same random dict is loaded into our
module with ``load_state_dict(strict=True)``, which checks the key names and shapes too. The comparison
runs in float64, so the tolerance measures the structure, not float32 rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from vega3d.fusion import RELEASED_FUSIONS, build_fusion, released_fusion

D = 16
TOLERANCE = 1e-6  # max |ours - reference|, float64


def ln(x, p, name, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]


def linear(x, p, name):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_token_gated(p, x2d, xg):
    n2, ng = ln(x2d, p, "norm1"), ln(xg, p, "norm2")
    g = sigmoid(linear(torch.cat([n2, ng], -1), p, "gate_projection.0"))
    return g * n2 + (1 - g) * ng


def ref_token_gated_residual(p, x2d, xg):
    n2, ng = ln(x2d, p, "norm1"), ln(xg, p, "norm2")
    g = sigmoid(linear(torch.cat([n2, ng], -1), p, "gate_projection.0"))
    return x2d + p["residual_scale"] * (1 - g) * (xg - x2d)  # the closed form of section 3


def ref_concat(p, x2d, xg):
    return linear(torch.cat([ln(x2d, p, "norm1"), ln(xg, p, "norm2")], -1), p, "projection")


def ref_channel_gated(p, x2d, xg):
    n2, ng = ln(x2d, p, "norm1"), ln(xg, p, "norm2")
    g = sigmoid(linear(torch.cat([n2, ng], -1), p, "gate_projection.0"))  # [..., D]: one gate per channel
    return g * n2 + (1 - g) * ng


def ref_weighted(p, x2d, xg, gen_key="weight_gen"):
    return (p["weight_2d"] * x2d + p[gen_key] * xg) / (p["weight_2d"] + p[gen_key])


def ref_grid_code(h, w, dim):
    """P [h*w, dim]: first dim/2 from the row, last dim/2 from the column, each [sin(p w) || cos(p w)]."""
    quarter = dim // 4
    code = torch.zeros(h * w, dim, dtype=torch.float64)
    for r in range(h):
        for c in range(w):
            for k in range(quarter):
                omega = 10000.0 ** (-k / quarter)
                code[r * w + c, k], code[r * w + c, quarter + k] = math.sin(r * omega), math.cos(r * omega)
                code[r * w + c, 2 * quarter + k], code[r * w + c, 3 * quarter + k] = math.sin(c * omega), math.cos(c * omega)
    return code


def ref_cross_attention(p, x, xg, grid, num_layers, heads=8):
    position = ref_grid_code(*grid, x.shape[-1]).to(x.dtype)
    for i in range(num_layers):
        b = f"cross_attn_blocks.{i}"
        q_in = ln(x, p, f"{b}.norm1_query") + position
        k_in = ln(xg, p, f"{b}.norm1_key") + position
        v_in = ln(xg, p, f"{b}.norm1_value")
        wq, wk, wv = p[f"{b}.cross_attention.in_proj_weight"].chunk(3)
        bq, bk, bv = p[f"{b}.cross_attention.in_proj_bias"].chunk(3)
        heads_of = lambda t: t.reshape(*t.shape[:-1], heads, -1).transpose(-2, -3)  # noqa: E731
        q, k, v = heads_of(q_in @ wq.T + bq), heads_of(k_in @ wk.T + bk), heads_of(v_in @ wv.T + bv)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        x = x + linear((attn @ v).transpose(-2, -3).reshape(x.shape), p, f"{b}.cross_attention.out_proj")
        x = x + linear(gelu(linear(ln(x, p, f"{b}.norm2"), p, f"{b}.mlp.0")), p, f"{b}.mlp.3")
    return x


def ref_instruction_gated(p, x2d, xg, ctx=None, context_scale=1.0, gate_bias=-0.5):
    n2, ng = ln(x2d, p, "norm1"), ln(xg, p, "norm2")
    logit = linear(torch.cat([n2, ng], -1), p, "gate_projection") + gate_bias  # [B, T, N, 1]
    if ctx is not None:  # ctx [B, D]: one scalar per sample, added to all of its tokens
        hidden = linear(ln(ctx, p, "norm_ctx"), p, "ctx_projection.0")
        shift = linear(hidden * sigmoid(hidden), p, "ctx_projection.2")  # SiLU
        logit = logit + context_scale * shift[:, None, None, :]
    g = sigmoid(logit)
    return g * n2 + (1 - g) * ng


def released_weights(shapes: dict[str, tuple[int, ...]], seed=0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {key: torch.randn(shape, generator=generator) * (0.3 if len(shape) == 2 else 1.0)
               for key, shape in shapes.items()}
    for key in ("weight_2d", "weight_gen", "weight_3d"):  # keep w_2d + w_gen away from 0
        if key in weights:
            weights[key] = weights[key].abs() + 0.2
    return weights


def ln_keys(*names):
    return {f"{n}.{part}": (D,) for n in names for part in ("weight", "bias")}


def linear_keys(name, out_features, in_features):
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def block_keys(i):
    b = f"cross_attn_blocks.{i}"
    return {**ln_keys(f"{b}.norm1_query", f"{b}.norm1_key", f"{b}.norm1_value", f"{b}.norm2"),
            f"{b}.cross_attention.in_proj_weight": (3 * D, D), f"{b}.cross_attention.in_proj_bias": (3 * D,),
            **linear_keys(f"{b}.cross_attention.out_proj", D, D),
            **linear_keys(f"{b}.mlp.0", 4 * D, D), **linear_keys(f"{b}.mlp.3", D, 4 * D)}


GATE = {**ln_keys("norm1", "norm2"), **linear_keys("gate_projection.0", 1, 2 * D)}
CASES = {  # released method -> (released key shapes, reference, extra build options)
    "token_gated": (GATE, ref_token_gated, {}),
    "token_gated_residual": ({**GATE, "residual_scale": ()}, ref_token_gated_residual, {}),
    "concat": ({**ln_keys("norm1", "norm2"), **linear_keys("projection", D, 2 * D)}, ref_concat, {}),
    "gated": ({**ln_keys("norm1", "norm2"), **linear_keys("gate_projection.0", D, 2 * D)}, ref_channel_gated, {}),
    "weighted": ({"weight_2d": (), "weight_gen": ()}, ref_weighted, {}),
}


def streams(shape=(2, 3, 6, D), seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=generator, dtype=torch.float64),
            torch.randn(shape, generator=generator, dtype=torch.float64) * 2 + 0.5)


def loaded(method, shapes, **options):
    name, released_options = released_fusion(method, num_layers=options.pop("num_layers", 1))
    fusion = build_fusion(name, D, **released_options, **options).eval()
    weights = released_weights(shapes)
    fusion.load_state_dict(weights, strict=True)
    return fusion.double(), {key: value.double() for key, value in weights.items()}


def assert_matches(ours, reference):
    error = (ours - reference).abs().max().item()
    assert error <= TOLERANCE, f"max |ours - reference| = {error:.3g}"


@pytest.mark.parametrize("method", sorted(CASES))
def test_released_module_matches_independent_reimplementation(method):
    shapes, reference, options = CASES[method]
    fusion, weights = loaded(method, shapes, **options)
    sem, gen = streams()
    with torch.no_grad():
        assert_matches(fusion(sem, gen), reference(weights, sem, gen))


def test_weighted_loads_the_spatial_reasoning_key_name():
    fusion, weights = loaded("weighted", {"weight_2d": (), "weight_3d": ()})
    sem, gen = streams()
    with torch.no_grad():
        assert_matches(fusion(sem, gen), ref_weighted(weights, sem, gen, gen_key="weight_3d"))
    assert set(fusion.state_dict()) == {"weight_2d", "weight_gen"}
    fresh = build_fusion("weighted", D)
    assert fresh.weight_2d.item() == fresh.weight_gen.item() == 0.5 and fresh.weight_2d.ndim == 0


@pytest.mark.parametrize("num_layers, grid", [(1, None), (3, (2, 3))])
def test_cross_attention_matches_independent_reimplementation(num_layers, grid):
    shapes = {k: v for i in range(num_layers) for k, v in block_keys(i).items()}
    options = {"num_layers": num_layers} if grid is None else {"num_layers": num_layers, "grid": grid}
    fusion, weights = loaded("cross_attention", shapes, **options)
    tokens = 9 if grid is None else 6
    sem, gen = streams((2, 2, tokens, D))
    with torch.no_grad():
        assert_matches(fusion(sem, gen), ref_cross_attention(weights, sem, gen, grid or (3, 3), num_layers))
    block = fusion.cross_attn_blocks[0]
    assert block.cross_attention.num_heads == 8 and block.cross_attention.batch_first
    assert block.cross_attention.dropout == 0.1 and block.mlp[2].p == block.mlp[4].p == 0.1


def test_cross_attention_dropout_acts_in_training_only():
    fusion = build_fusion("cross_attention", D)
    sem, gen = (t.float() for t in streams((2, 9, D)))
    torch.manual_seed(0)
    first = fusion(sem, gen)
    assert not torch.equal(first, fusion(sem, gen))  # training: two dropout draws
    fusion.eval()
    assert torch.equal(fusion(sem, gen), fusion(sem, gen))
    no_dropout = build_fusion("cross_attention", D, dropout=0.0)
    no_dropout.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(no_dropout(sem, gen), fusion(sem, gen))


INSTRUCTION = {**ln_keys("norm1", "norm2", "norm_ctx"), **linear_keys("gate_projection", 1, 2 * D),
               **linear_keys("ctx_projection.0", D // 2, D), **linear_keys("ctx_projection.2", 1, D // 2)}


@pytest.mark.parametrize("with_context", [False, True])
def test_instruction_gate_matches_independent_reimplementation(with_context):
    fusion, weights = loaded("instruction_token_gated", INSTRUCTION)
    sem, gen = streams()
    ctx = torch.randn(2, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64) if with_context else None
    with torch.no_grad():
        assert_matches(fusion(sem, gen, context=ctx), ref_instruction_gated(weights, sem, gen, ctx))
        # one context for everything ([D]) is the same as that context repeated per sample
        if with_context:
            assert_matches(fusion(sem, gen, context=ctx[0]), ref_instruction_gated(weights, sem, gen, ctx[:1].expand(2, -1)))
    scaled = build_fusion("instruction_token_gated", D, context_scale=0.25, gate_bias=0.3).eval()
    scaled.double().load_state_dict(weights)
    with torch.no_grad():
        assert_matches(scaled(sem, gen, context=ctx), ref_instruction_gated(weights, sem, gen, ctx, 0.25, 0.3))


def test_every_released_method_has_a_case():
    covered = set(CASES) | {"cross_attention", "instruction_token_gated", "context_gated", "add", "only"}
    assert covered == set(RELEASED_FUSIONS)
    sem, gen = streams()
    for method, want in (("add", sem + gen), ("only", gen)):
        name, options = released_fusion(method)
        assert torch.equal(build_fusion(name, D, **options)(sem, gen), want)
    assert released_fusion("cross_attention", num_layers=3) == ("cross_attention", {"num_layers": 3})
    with pytest.raises(ValueError, match="unknown released fusion method 'sum'; known: add, concat"):
        released_fusion("sum")
