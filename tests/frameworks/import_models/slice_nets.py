"""PyTorch modules that split their channels as ShuffleNetV2, GhostNet and CSPNet do: `chunk`,
`torch.split` and slicing `x[:, a:b]` on maps and on a vector, for tests/frameworks/
test_channel_slice.py."""

from __future__ import annotations

import torch
from torch import nn


class SplitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.mix = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(10, 12)
        self.out = nn.Linear(7, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        kept, changed = x.chunk(2, dim=1)
        x = torch.cat([kept, self.branch(changed)], 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)
        small, middle, large = torch.split(x, [2, 3, 3], dim=1)
        x = torch.cat([small, self.mix(middle), torch.relu(large)], 1)
        x = torch.cat([x, x[:, 1:4], x[:, 5:]], 1)
        kept, _ = torch.split(x, [10, 4], dim=1)  # a part no one uses
        x = self.head(kept.mean((2, 3)))
        return self.out(x[:, 3:10])


def split_net() -> nn.Module:
    torch.manual_seed(0)
    return SplitNet().eval()
