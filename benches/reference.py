"""PyTorch reference for sweeper's training benchmark.

The same SimCLR step as `sweeper bench train`: torchvision backbone without its
classifier, v1 projection head (d->d no bias, BN, ReLU, d->128 no bias, BN), NT-Xent
(mean over 2N anchors, temperature 0.5), LARS (momentum 0.9, eta 0.001, weight decay
1e-6, biases and BN excluded) at the same batch size and resolution.

  compute     two fixed random views already on the device
  end_to_end  uint8 images in memory -> torchvision v2 SimCLR transforms in a
              DataLoader (two views per image) -> the same step

Prints one JSON line like sweeper's.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2


class Lars(torch.optim.Optimizer):
    def __init__(self, params, lr, weight_decay=1e-6, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                excluded = w.ndim <= 1
                if not excluded:
                    g = g.add(w, alpha=group["weight_decay"])
                    w_norm, g_norm = w.norm(), g.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[w]
                if "v" not in state:
                    state["v"] = torch.zeros_like(w)
                v = state["v"]
                v.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                w.sub_(v)


def nt_xent(z1, z2, temperature):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def small_resnet():
    """sweeper's `small_resnet`: a CIFAR stem (3x3 conv, 32 channels, no max pool),
    one torchvision BasicBlock per stage at widths 32/64/128/256, 256 features."""
    from torchvision.models.resnet import BasicBlock

    def stage(c_in, width, stride):
        down = None
        if stride != 1 or c_in != width:
            down = nn.Sequential(nn.Conv2d(c_in, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        return BasicBlock(c_in, width, stride, down)

    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        stage(32, 32, 1), stage(32, 64, 2), stage(64, 128, 2), stage(128, 256, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net, 256


def backbone(name):
    if name == "small_resnet":
        return small_resnet()
    net = getattr(torchvision.models, name)(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def head(dim, out=128):
    return nn.Sequential(
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
        nn.Linear(dim, out, bias=False), nn.BatchNorm1d(out),
    )


class Views(torch.utils.data.Dataset):
    def __init__(self, images, size):
        self.images = images
        small = size <= 32
        s = 0.5 if small else 1.0
        steps = [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=False),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        if not small:
            k = (size // 10) // 2 * 2 + 1
            steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
        steps.append(v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        self.transform = v2.Compose(steps)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        return self.transform(img), self.transform(img)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mode", choices=["compute", "end_to_end"], default="compute")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    net, dim = backbone(args.backbone)
    model = nn.Sequential(net, head(dim)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = Lars(model.parameters(), lr=0.3 * args.batch / 256)
    n, s = args.batch, args.image_size
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def step(v1, v2_):
        both = torch.cat([v1, v2_])
        if cuda:
            both = both.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            z = model(both)
        loss = nt_xent(z[:n], z[n:], 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    total = args.warmup + args.steps
    if args.mode == "compute":
        fixed = (torch.rand(n, 3, s, s, device=device), torch.rand(n, 3, s, s, device=device))
        batches = (((fixed[0] - mean) / std, (fixed[1] - mean) / std) for _ in range(total))
    else:
        pool = torch.randint(0, 256, (4 * n, 3, s, s), dtype=torch.uint8)
        loader = torch.utils.data.DataLoader(
            Views(pool, s), batch_size=n, shuffle=True, drop_last=True,
            num_workers=args.workers, persistent_workers=args.workers > 0, pin_memory=cuda,
        )

        def endless():
            while True:
                for v1, v2_ in loader:
                    yield v1.to(device, non_blocking=True), v2_.to(device, non_blocking=True)

        batches = endless()
    it = iter(batches)
    for _ in range(args.warmup):
        step(*next(it))
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(*next(it))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "implementation": "pytorch", "backbone": args.backbone, "image_size": s, "batch_size": n,
        "mode": args.mode, "device": args.device, "steps": args.steps, "seconds": seconds,
        "images_per_s": args.steps * n / seconds, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "workers": args.workers if args.mode == "end_to_end" else 0,
    }))


if __name__ == "__main__":
    main()
