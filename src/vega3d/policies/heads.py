"""OFT's continuous heads (REFERENCE-VLA F2.8, F2.10): the L1-regression MLP-ResNet and the proprio projector."""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """Action hidden states ``[B, K * A, D]`` -> normalised actions ``[B, K, A]`` (K chunk, A action dims):
    the A hidden states of one timestep are concatenated (``[B, K, A * D]``) and mapped by the MLP-ResNet."""

    def __init__(self, hidden_dim: int, action_dim: int, num_actions_chunk: int):
        super().__init__()
        self.action_dim, self.num_actions_chunk = action_dim, num_actions_chunk
        self.model = MLPResNet(2, hidden_dim * action_dim, hidden_dim, action_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch = hidden.shape[0]
        return self.model(hidden.reshape(batch, self.num_actions_chunk, -1))


class ProprioProjector(nn.Module):
    """Robot state ``[B, P]`` -> one LLM token ``[B, D]``: fc1, GELU, fc2."""

    def __init__(self, proprio_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(proprio)))
