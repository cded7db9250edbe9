"""ResNet-50 v1 in PyTorch with torchvision's parameter names (stride on the first 1x1, as the
Keras weights have it), returning the five pooled blocks attrex taps: the stem after its ReLU,
then each stage. Shared by `side_by_side.py` (random weights, for timing) and
`int8_accuracy.py` (the real weights)."""
import torch
import torch.nn as nn


class Bottleneck(nn.Module):
    def __init__(s, cin, mid, cout, stride):
        super().__init__()
        s.conv1 = nn.Conv2d(cin, mid, 1, stride, bias=False)
        s.bn1 = nn.BatchNorm2d(mid)
        s.conv2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        s.bn2 = nn.BatchNorm2d(mid)
        s.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        s.bn3 = nn.BatchNorm2d(cout)
        s.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                        if stride != 1 or cin != cout else None)

    def forward(s, x):
        r = x if s.downsample is None else s.downsample(x)
        x = torch.relu(s.bn1(s.conv1(x)))
        x = torch.relu(s.bn2(s.conv2(x)))
        return torch.relu(s.bn3(s.conv3(x)) + r)


class R50(nn.Module):
    """Up to block `upto` (1 = the stem only, 5 = every stage); `forward` returns the pooled
    blocks as a tuple."""

    def __init__(s, upto=5):
        super().__init__()
        s.upto = upto
        s.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        s.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (mid, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            if i + 2 > upto:
                break
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(cin, mid, mid * 4, (2 if i > 0 else 1) if j == 0 else 1))
                cin = mid * 4
            setattr(s, f"layer{i + 1}", nn.Sequential(*blocks))

    def stages(s):
        return [getattr(s, f"layer{i}") for i in range(1, s.upto)]

    def forward(s, x):
        x = torch.relu(s.bn1(s.conv1(x)))
        out = [x.mean((2, 3))]
        x = nn.functional.max_pool2d(x, 3, 2, 1)
        for stage in s.stages():
            x = stage(x)
            out.append(x.mean((2, 3)))
        return tuple(out)
