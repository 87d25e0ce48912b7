"""PyTorch networks with ShuffleNet's channel shuffle and a decoder's upsampling, written as
torchvision writes them (view, transpose, view; F.interpolate), for the import tests."""

import torch
import torch.nn.functional as F
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision.models.shufflenetv2.channel_shuffle, verbatim in effect."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1, groups=3)
        self.conv3 = nn.Conv2d(12, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = channel_shuffle(x, 3)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.relu(self.conv3(x))
        x = F.interpolate(x, scale_factor=(2, 3), mode="bilinear", align_corners=False)
        return self.fc(torch.flatten(self.pool(x), 1))


def shuffle_up() -> nn.Module:
    torch.manual_seed(0)
    return ShuffleUp().eval()
