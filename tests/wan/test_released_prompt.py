"""The released code's prompt-embedding files: read without code execution, zero-padded to 512 rows."""

from __future__ import annotations

import pytest
import torch

from vega3d.backbones.wan_prompt import PROMPT_LENGTH, load_prompt_embedding, load_released_prompt_embedding
from vega3d.cli import main


class Payload:
    """Stands for arbitrary pickled code: weights_only=True must refuse to build it."""


@pytest.mark.parametrize("wrap", [lambda t: t, lambda t: t[None], lambda t: {"context": t}, lambda t: {"embedding": t[None]}])
def test_released_forms_are_padded_to_512_rows(tmp_path, wrap):
    rows = torch.randn(3, 16).to(torch.bfloat16)
    torch.save(wrap(rows), tmp_path / "wan_prompt_embedding.pt")
    embeds = load_prompt_embedding(tmp_path / "wan_prompt_embedding.pt", 16)
    assert embeds.shape == (1, PROMPT_LENGTH, 16) and embeds.dtype == torch.float32
    torch.testing.assert_close(embeds[0, :3], rows.float(), rtol=0, atol=0)
    assert embeds[0, 3:].abs().sum() == 0


def test_bad_released_files_are_refused_with_the_reason(tmp_path):
    torch.save({"prompt_embeds": torch.zeros(1, 16)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match=r"dict.pt: a dict without context or embedding"):
        load_released_prompt_embedding(tmp_path / "dict.pt", 16)
    torch.save(torch.zeros(1, 8), tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match=r"narrow.pt: shape \(1, 8\), expected \[rows, 16\]"):
        load_released_prompt_embedding(tmp_path / "narrow.pt", 16)
    torch.save(torch.zeros(PROMPT_LENGTH + 1, 16), tmp_path / "long.pt")
    with pytest.raises(ValueError, match=r"1 <= rows <= 512"):
        load_released_prompt_embedding(tmp_path / "long.pt", 16)
    torch.save(Payload(), tmp_path / "code.pt")  # not an allow-listed type: never unpickled
    with pytest.raises(ValueError, match=r"code.pt: not a plain tensor file readable with weights_only=True"):
        load_released_prompt_embedding(tmp_path / "code.pt", 16)


def test_cli_from_writes_our_safetensors_format(tmp_path, capsys):
    rows = torch.randn(1, 16).to(torch.bfloat16)
    torch.save({"context": rows}, tmp_path / "wan_prompt_embedding.pt")
    out = tmp_path / "ours.safetensors"
    assert main(["prompt-embedding", "--from", str(tmp_path / "wan_prompt_embedding.pt"), "--text-dim", "16", "--out", str(out)]) == 0
    assert "1 non-zero row(s)" in capsys.readouterr().out
    torch.testing.assert_close(load_prompt_embedding(out, 16), load_released_prompt_embedding(tmp_path / "wan_prompt_embedding.pt", 16))
    assert main(["prompt-embedding", "--from", str(tmp_path / "missing.pt")]) == 1
    assert "--from" in (err := capsys.readouterr().err) and "missing.pt: no such file" in err
