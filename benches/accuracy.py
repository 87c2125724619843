"""PyTorch side of sweeper's accuracy-parity benchmark (benches/accuracy.sh).

An independent implementation of what a sweep with a SimCLR pretext stage and a
linear stage does, on the same image folders, so that a change to sweeper's engine
that costs accuracy shows as a gap between the two sides:

  data      DATA/pretext/<label>/*.png (labels unused), DATA/labelled/<label>/*.png
            (split per label into train and validation), DATA/test/<label>/*.png.
            Decoded as src/train/data/cache.rs does: RGB, centre square, resized to
            32 px with the image crate's triangle filter (its float32 arithmetic, in
            its order).
  pretext   small_resnet (CIFAR stem, one basic block per stage at 32/64/128/256,
            Kaiming-normal fan-out convs, batch norm at 1/0) + the v1 projection head
            (d->d no bias, BN, ReLU, d->p no bias, BN; PyTorch's default init),
            NT-Xent (mean over the 2N anchors), LARS (momentum 0.9, eta 0.001, weight
            decay 1e-6, 1-D parameters excluded), linear warmup then cosine, on the
            augmentation of src/train/augment.rs (random resized crop and flip as one
            bilinear resampling, colour jitter in a random order, grayscale; blur
            only above 32 px; jitter strength 0.5 at 32 px and below).
  linear    frozen backbone, batch norm in inference mode, pooled features of centre
            crops computed once, standardised with the training split's statistics,
            one linear layer, SGD with momentum 0.9, early stopping on the validation
            accuracy, the best epoch's weights restored, then the test accuracy.
  baseline  the same linear protocol on the untrained backbone of the same seed.

Defaults are sweeper's (src/sweep/params.rs); the shell script passes every setting
it also writes into the sweep. Random draws come from seeded generators of their own,
so the two sides agree in distribution, not image for image. Needs only torch: the
PNG files are read by the small decoder below.

Prints one JSON line.
"""

import argparse
import json
import math
import random
import struct
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# ImageNet statistics and ITU-R 601 luma weights, as src/train/augment.rs.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LUMA = (0.2989, 0.587, 0.114)
# What sweeper reads as images (src/train/data/folder.rs); only PNG is decoded here.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BN_EPS = 1e-5
LARS_ETA = 0.001
MOMENTUM = 0.9


# --- Images ---------------------------------------------------------------------------


def unfilter(data, height, stride, bpp):
    """Undoes the PNG row filters (None, Sub, Up, Average, Paeth)."""
    out = bytearray(height * stride)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        kind = data[pos]
        row = bytearray(data[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                row[i] = (row[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                predictor = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + predictor) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown PNG filter type {kind}")
        out[y * stride:(y + 1) * stride] = row
        prev = row
    return out


def read_png(path):
    """`uint8 [3, H, W]` of a non-interlaced PNG, as the image crate's `to_rgb8` gives
    it: gray replicated, alpha dropped, palette looked up, 16 bits as (v + 128) / 257."""
    data = Path(path).read_bytes()
    if data[:8] != PNG_SIGNATURE:
        raise ValueError(f"{path}: not a PNG file")
    header, palette, idat, pos = None, None, [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length  # length, type, body, CRC
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if interlace:
        raise ValueError(f"{path}: interlaced PNGs are not supported")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    bits = channels * depth
    stride = (width * bits + 7) // 8
    raw = unfilter(zlib.decompress(b"".join(idat)), height, stride, max(1, bits // 8))
    rows = torch.frombuffer(raw, dtype=torch.uint8).view(height, stride)
    if depth == 16:
        wide = rows.view(height, -1, 2).to(torch.int32)
        samples = ((wide[..., 0] * 256 + wide[..., 1] + 128) // 257).to(torch.uint8)
    elif depth < 8:
        shifts = torch.arange(8 - depth, -1, -depth, dtype=torch.uint8)
        samples = ((rows.unsqueeze(-1) >> shifts) & ((1 << depth) - 1)).view(height, -1)[:, :width]
        if colour == 0:  # low-bit gray is scaled to 0..255, palette indices are not
            samples = samples * (255 // ((1 << depth) - 1))
    else:
        samples = rows
    pixels = samples.reshape(height, width, channels)
    if colour == 3:
        lut = torch.frombuffer(bytearray(palette), dtype=torch.uint8).view(-1, 3)
        rgb = lut[pixels[..., 0].long()]
    elif channels <= 2:
        rgb = pixels[..., :1].expand(-1, -1, 3)
    else:
        rgb = pixels[..., :3]
    return rgb.permute(2, 0, 1).contiguous()


def f32(value):
    return torch.tensor(value, dtype=torch.float32)


def triangle_taps(source, target):
    """Per output pixel, the first source pixel and the weights of the image crate's
    `resize` with `FilterType::Triangle`, computed in float32 as it does."""
    ratio = f32(source) / f32(target)
    scale = torch.clamp(ratio, min=1.0)  # shrinking widens the filter
    support = scale  # the triangle's support is 1 source pixel, times the scale
    taps = []
    for out in range(target):
        centre = (f32(out) + 0.5) * ratio
        left = min(max(int(torch.floor(centre - support)), 0), source - 1)
        right = min(max(int(torch.ceil(centre + support)), left + 1), source)
        centre = centre - 0.5
        weights = []
        for i in range(left, right):
            x = torch.abs((f32(i) - centre) / scale)
            weights.append(1.0 - x if x < 1.0 else f32(0.0))
        total = f32(0.0)
        for w in weights:
            total = total + w
        taps.append((left, [w / total for w in weights]))
    return taps


def resample(x, taps, dim):
    """One pass of the separable filter along `dim` of a float32 batch, each output
    summed in the crate's order (float32, left to right)."""
    outs = []
    for left, weights in taps:
        total = torch.zeros_like(x.select(dim, 0))
        for i, w in enumerate(weights):
            total = total + x.select(dim, left + i) * w
        outs.append(total)
    return torch.stack(outs, dim)


def resize_triangle(images, side):
    """`uint8 [N, 3, H, W]` -> `uint8 [N, 3, side, side]` as `imageops::resize`:
    vertical pass to float32, horizontal pass, clamp, round half away from zero."""
    _, _, height, width = images.shape
    x = images.to(torch.float32)
    x = resample(x, triangle_taps(height, side), 2)
    x = resample(x, triangle_taps(width, side), 3).clamp(0.0, 255.0)
    whole = torch.trunc(x)
    return (whole + (x - whole >= 0.5)).to(torch.uint8)


def image_files(folder):
    """Image files below a label folder, sorted, hidden files left out."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix == ".png":
            files.append(path)
        elif suffix in IMAGE_EXTENSIONS:
            raise SystemExit(f"{path}: only PNG images are read here")
    return files


def load_folder(folder, side, label_names=None):
    """An ImageFolder decoded as sweeper's cache does: (`uint8 [N, 3, side, side]`,
    per-label lists of row indices, label names sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a directory")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if label_names is None:
        label_names = found
    elif sorted(label_names) != found:
        raise SystemExit(f"{folder} has labels {found}, expected {label_names}")
    crops, rows = {}, {}  # decoded squares grouped by size, so each size resizes once
    per_label = []
    count = 0
    for name in label_names:
        indices = []
        for path in image_files(folder / name):
            image = read_png(path)
            _, h, w = image.shape
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            crops.setdefault(s, []).append(image[:, top:top + s, left:left + s])
            rows.setdefault(s, []).append(count)
            indices.append(count)
            count += 1
        per_label.append(indices)
    images = torch.zeros(count, 3, side, side, dtype=torch.uint8)
    for s, group in crops.items():
        batch = torch.stack(group)
        images[rows[s]] = batch if s == side else resize_triangle(batch, side)
    return images, per_label, label_names


def round_half_away(x):
    return math.floor(x + 0.5)


def split_labelled(per_label, val_share, seed):
    """Per label, a seeded shuffle, then the first round(n × (1 − val_share)) images
    train and the rest validate, as folder.rs splits a dataset."""
    train, val = [], []
    for label, indices in enumerate(per_label):
        order = list(indices)
        random.Random(f"{seed}:split:{label}").shuffle(order)
        cut = round_half_away(len(order) * (1.0 - val_share))
        train += [(i, label) for i in order[:cut]]
        val += [(i, label) for i in order[cut:]]
    return train, val


# --- Augmentation (src/train/augment.rs) ----------------------------------------------


class AugmentConfig:
    """`AugmentConfig::simclr`: strength 1.0 with blur, or 0.5 without blur at 32 px
    and less."""

    def __init__(self, image_size, strength=None, crop_min_scale=0.08):
        small = image_size <= 32
        self.out_size = image_size
        self.crop_scale = (crop_min_scale, 1.0)
        self.crop_ratio = (3.0 / 4.0, 4.0 / 3.0)
        self.flip_p = 0.5
        self.jitter_strength = strength if strength is not None else (0.5 if small else 1.0)
        self.jitter_p = 0.8
        self.grayscale_p = 0.2
        self.blur_p = 0.0 if small else 0.5
        self.blur_sigma = (0.1, 2.0)


class View:
    """The random draws of one view: crop box (left, top, width, height in source
    pixels), flip, jitter (brightness, contrast, saturation, hue, order), grayscale,
    blur sigma."""

    def __init__(self, crop, flip=False, jitter=None, grayscale=False, blur_sigma=None):
        self.crop, self.flip, self.jitter = crop, flip, jitter
        self.grayscale, self.blur_sigma = grayscale, blur_sigma


def sample_crop(rng, source, scale, ratio):
    """torchvision's RandomResizedCrop box, in real-valued pixels: ten tries at a random
    area and log-uniform aspect ratio, then the whole image."""
    area = source * source
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if w <= source and h <= source:
            return (rng.uniform(0.0, source - w), rng.uniform(0.0, source - h), w, h)
    aspect = min(max(1.0, ratio[0]), ratio[1])
    w, h = (source, source / aspect) if aspect >= 1.0 else (source * aspect, source)
    return ((source - w) / 2, (source - h) / 2, w, h)


def sample_views(rng, n, source, cfg):
    s = cfg.jitter_strength

    def factor(amount):
        return rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount)

    views = []
    for _ in range(n):
        crop = sample_crop(rng, source, cfg.crop_scale, cfg.crop_ratio)
        flip = rng.random() < cfg.flip_p
        jitter = None
        if s > 0 and rng.random() < cfg.jitter_p:
            order = [0, 1, 2, 3]
            rng.shuffle(order)
            jitter = (factor(0.8 * s), factor(0.8 * s), factor(0.8 * s),
                      rng.uniform(-0.2 * s, 0.2 * s), order)
        grayscale = rng.random() < cfg.grayscale_p
        blur = rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.blur_p else None
        views.append(View(crop, flip, jitter, grayscale, blur))
    return views


def crop_flip(x, views, out_size):
    """Crop boxes and flips as one bilinear resampling with border padding."""
    source = x.shape[2]
    theta = []
    for v in views:
        left, top, w, h = v.crop
        theta.append([[w / source * (-1.0 if v.flip else 1.0), 0.0, (left + w / 2) / source * 2 - 1],
                      [0.0, h / source, (top + h / 2) / source * 2 - 1]])
    theta = torch.tensor(theta, dtype=torch.float32)
    grid = F.affine_grid(theta, [len(views), 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(x):
    return (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def blend(image, other, factor):
    return image * factor + other * (1.0 - factor)


def shift_hue(x, shift):
    """torchvision's `adjust_hue` through HSV, as augment.rs writes it."""
    maxc = x.max(1, keepdim=True).values
    minc = x.min(1, keepdim=True).values
    chroma = maxc - minc
    flat = chroma == 0
    ones = torch.ones_like(maxc)
    saturation = chroma / torch.where(flat, ones, maxc)
    divisor = torch.where(flat, ones, chroma)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~(is_r | is_g)
    hue = is_r.float() * (bc - gc) + is_g.float() * (rc - bc + 2.0) + is_b.float() * (gc - rc + 4.0)
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    hue = torch.remainder(hue + shift, 1.0)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(hue * 6.0 + n, 6.0)
        out.append(maxc - maxc * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.cat(out, 1)


def jitter(x, views):
    """Colour jitter in each view's own order, clipped to [0, 1] after each operation."""
    for position in range(4):
        for op in range(4):
            chosen = [(i, v.jitter) for i, v in enumerate(views)
                      if v.jitter is not None and v.jitter[4][position] == op]
            if not chosen:
                continue
            idx = torch.tensor([i for i, _ in chosen])
            value = torch.tensor([j[op] for _, j in chosen], dtype=torch.float32).view(-1, 1, 1, 1)
            sub = x[idx]
            if op == 0:
                out = sub * value
            elif op == 1:
                out = blend(sub, grayscale(sub).mean(dim=(1, 2, 3), keepdim=True), value)
            elif op == 2:
                out = blend(sub, grayscale(sub), value)
            else:
                out = shift_hue(sub, value)
            x[idx] = out.clamp(0.0, 1.0)


def gaussian_blur(x, sigmas):
    """One sigma per image; the kernel is a tenth of the side, made odd; reflected edges."""
    n, c, h, w = x.shape
    radius = (h // 10) // 2
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernels = torch.stack([torch.exp(-offsets ** 2 / (2 * s * s)) for s in sigmas])
    kernels = (kernels / kernels.sum(1, keepdim=True)).float()
    kernel = kernels.view(n, 1, -1).repeat(1, c, 1).view(n * c, 1, -1)
    planes = F.pad(x.reshape(1, n * c, h, w), (radius, radius, 0, 0), mode="reflect")
    planes = F.conv2d(planes, kernel.view(n * c, 1, 1, -1), groups=n * c)
    planes = F.pad(planes, (0, 0, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel.view(n * c, 1, -1, 1), groups=n * c)
    return planes.reshape(n, c, h, w)


def augment(images, views, cfg):
    """`uint8 [N, 3, S, S]` -> float views in [0, 1], as `augment::apply`."""
    x = crop_flip(images.float() / 255.0, views, cfg.out_size)
    jitter(x, views)
    gray = [i for i, v in enumerate(views) if v.grayscale]
    if gray:
        idx = torch.tensor(gray)
        x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
    blurred = [i for i, v in enumerate(views) if v.blur_sigma is not None]
    if blurred:
        idx = torch.tensor(blurred)
        x[idx] = gaussian_blur(x[idx], [views[i].blur_sigma for i in blurred])
    return x.clamp(0.0, 1.0)


def center_crop(images, out_size):
    """Evaluation input: the centre 0.875 of the side, resized to `out_size`."""
    source = images.shape[2]
    side = 0.875 * source
    margin = (source - side) / 2
    views = [View((margin, margin, side, side))] * images.shape[0]
    return crop_flip(images.float() / 255.0, views, out_size).clamp(0.0, 1.0)


def normalize(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# --- Model, loss, optimizer -------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or c_in != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, width, 1, stride, bias=False), nn.BatchNorm2d(width, eps=BN_EPS))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class SmallResNet(nn.Module):
    """`ResNetConfig::SMALL`: CIFAR stem (3x3 conv, 32 channels, no max pool), one basic
    block per stage at widths 32/64/128/256, global average pool: 256 features."""

    feature_dim = 256

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, c_in = [], 32
        for stage, width in enumerate((32, 64, 128, 256)):
            blocks.append(BasicBlock(c_in, width, 1 if stage == 0 else 2))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.blocks(F.relu(self.bn1(self.conv1(x)))).mean(dim=(2, 3))


def projection_head(dim, out):
    """The v1 head with PyTorch's default initialisation, as simclr.rs builds it."""
    return nn.Sequential(
        nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(),
        nn.Linear(dim, out, bias=False), nn.BatchNorm1d(out),
    )


def nt_xent(z1, z2, temperature):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, targets)


class Lars(torch.optim.Optimizer):
    """google-research/simclr's LARS: parameters of at most one dimension (biases, batch
    norm) take neither weight decay nor the trust ratio."""

    def __init__(self, params, weight_decay):
        super().__init__(params, dict(lr=0.0, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                if w.ndim > 1:
                    g = g.add(w, alpha=group["weight_decay"])
                    w_norm, g_norm = w.norm(), g.norm()
                    trust = torch.where((w_norm > 0) & (g_norm > 0), LARS_ETA * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[w]
                if "v" not in state:
                    state["v"] = torch.zeros_like(w)
                state["v"].mul_(MOMENTUM).add_(g, alpha=group["lr"])
                w.sub_(state["v"])


class Schedule:
    """schedule.rs: warmup over floor(warmup_epochs × N / B) steps from 0, then a cosine
    to 0 at N × epochs // B + 1 steps."""

    def __init__(self, peak, batch_size, images, epochs, warmup_epochs):
        self.peak = peak
        self.warmup = math.floor(warmup_epochs * images / batch_size)
        self.total = images * epochs // batch_size + 1

    def lr(self, step):
        if step < self.warmup:
            return self.peak * step / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def peak_lr(args):
    base = args.lr_base if args.lr_base is not None else (0.075 if args.lr_sqrt else 0.3)
    return base * math.sqrt(args.batch_size) if args.lr_sqrt else base * args.batch_size / 256


# --- Stages -------------------------------------------------------------------------------


def log(message):
    print(message, file=sys.stderr, flush=True)


def pretext(images, args):
    """SimCLR on `images`; returns the trained backbone and each epoch's mean loss."""
    n, bs = images.shape[0], args.batch_size
    if n < bs:
        raise SystemExit(f"the pretext folder has {n} images, fewer than one batch of {bs}")
    steps = n // bs  # the last partial batch is dropped
    # A short run keeps a tenth of itself for warmup, like the 10 of 100 default.
    schedule = Schedule(peak_lr(args), bs, n, args.epochs, min(args.warmup_epochs, args.epochs / 10))
    cfg = AugmentConfig(args.image_size, args.augment_strength, args.crop_min_scale)
    torch.manual_seed(args.seed)
    backbone = SmallResNet()
    model = nn.Sequential(backbone, projection_head(SmallResNet.feature_dim, args.projection_dim))
    model.train()
    optimizer = Lars(model.parameters(), args.weight_decay)
    losses = []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        rng = random.Random(f"{args.seed}:pretext:{epoch}")
        order = list(range(n))
        rng.shuffle(order)
        total = 0.0
        for step in range(steps):
            batch = images[order[step * bs:(step + 1) * bs]]
            v1 = augment(batch, sample_views(rng, bs, images.shape[2], cfg), cfg)
            v2 = augment(batch, sample_views(rng, bs, images.shape[2], cfg), cfg)
            z = model(normalize(torch.cat([v1, v2])))
            loss = nt_xent(z[:bs], z[bs:], args.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(epoch * steps + step)
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise SystemExit(f"loss became {value} at epoch {epoch + 1}, step {step + 1}")
            total += value
        losses.append(total / steps)
        log(f"pretext epoch {epoch + 1}/{args.epochs}: loss {losses[-1]:.4f} "
            f"({time.perf_counter() - started:.1f} s)")
    return backbone, losses


@torch.no_grad()
def recalibrate_batch_norm(backbone, images, batch_size, image_size):
    """downstream.rs `recalibrate_batch_norm`: every running mean and variance becomes
    its average over the training split's centre crops (cumulative, momentum None)."""
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    backbone.train()
    for i in range(0, images.shape[0], batch_size):
        chunk = images[i:i + batch_size]
        if chunk.shape[0] >= 2:
            backbone(normalize(center_crop(chunk, image_size)))


@torch.no_grad()
def features(backbone, images, batch_size, image_size):
    backbone.eval()
    return torch.cat([backbone(normalize(center_crop(images[i:i + batch_size], image_size)))
                      for i in range(0, images.shape[0], batch_size)]).float()


def linear_protocol(trained, data, args, name):
    """downstream.rs `linear` on the backbone `trained` (None: a random one)."""
    # As sweeper: the seed, then a backbone built (and loaded from the pretext when
    # there is one), then the classifier; the baseline's backbone is therefore the
    # pretext's starting point and both runs start from the same classifier.
    torch.manual_seed(args.seed)
    backbone = SmallResNet()
    if trained is not None:
        backbone.load_state_dict(trained.state_dict())
    backbone.requires_grad_(False)
    recalibrate_batch_norm(backbone, data["splits"][0][0], args.linear_batch_size, args.image_size)
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = [
        (features(backbone, images, args.linear_batch_size, args.image_size), labels)
        for images, labels in data["splits"]
    ]
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True).clamp_min(1e-6)
    train_x, val_x, test_x = [(x - mean) / std for x in (train_x, val_x, test_x)]

    classifier = nn.Linear(SmallResNet.feature_dim, len(data["label_names"]))
    # tch's default linear layer: Kaiming-uniform weights (ReLU gain), bias in ±1/√fan_in.
    nn.init.kaiming_uniform_(classifier.weight, nonlinearity="relu")
    nn.init.uniform_(classifier.bias, -1 / math.sqrt(SmallResNet.feature_dim),
                     1 / math.sqrt(SmallResNet.feature_dim))
    # At a constant rate this is sweeper's v = 0.9 v + lr g; w -= v, without weight decay.
    optimizer = torch.optim.SGD(classifier.parameters(), lr=args.linear_lr, momentum=MOMENTUM)
    best, best_epoch = -1.0, 0
    best_state = {k: v.clone() for k, v in classifier.state_dict().items()}
    n = train_x.shape[0]
    for epoch in range(1, args.linear_epochs + 1):
        order = list(range(n))
        random.Random(f"{args.seed}:linear:{epoch}").shuffle(order)
        for start in range(0, n, args.linear_batch_size):
            idx = torch.tensor(order[start:start + args.linear_batch_size])
            loss = F.cross_entropy(classifier(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_accuracy = (classifier(val_x).argmax(1) == val_y).float().mean().item()
        if val_accuracy > best:
            best, best_epoch = val_accuracy, epoch
            best_state = {k: v.clone() for k, v in classifier.state_dict().items()}
        elif epoch - best_epoch >= args.patience:
            break
    classifier.load_state_dict(best_state)
    with torch.no_grad():
        accuracy = (classifier(test_x).argmax(1) == test_y).float().mean().item()
    log(f"{name}: test accuracy {accuracy:.4f} (best epoch {best_epoch}, validation {best:.4f})")
    return accuracy, best_epoch


def load_data(args):
    root = Path(args.data)
    pool, _, _ = load_folder(root / "pretext", args.image_size)
    labelled, per_label, label_names = load_folder(root / "labelled", args.image_size)
    test, test_per_label, _ = load_folder(root / "test", args.image_size, label_names)
    train, val = split_labelled(per_label, args.val_share, args.seed)
    if not train or not val:
        raise SystemExit("the train or the validation split is empty")

    def pick(pairs):
        return labelled[[i for i, _ in pairs]], torch.tensor([label for _, label in pairs])

    test_labels = torch.tensor([label for label, rows in enumerate(test_per_label) for _ in rows])
    return {
        "pool": pool,
        "label_names": label_names,
        "splits": [pick(train), pick(val), (test, test_labels)],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder with pretext/, labelled/ and test/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=32)
    # Pretext, with sweeper's defaults (PretextParams).
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--projection-dim", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--lr-sqrt", action=argparse.BooleanOptionalAction, default=True,
                    help="peak lr = lr_base × √batch instead of lr_base × batch / 256")
    ap.add_argument("--lr-base", type=float, default=None,
                    help="default 0.3, or 0.075 with --lr-sqrt")
    ap.add_argument("--weight-decay", type=float, default=1e-6)
    ap.add_argument("--warmup-epochs", type=float, default=10.0,
                    help="at most a tenth of the run")
    ap.add_argument("--augment-strength", type=float, default=None,
                    help="colour-jitter strength; default 0.5 at <= 32 px, else 1.0")
    ap.add_argument("--crop-min-scale", type=float, default=0.08)
    # Linear protocol (DownstreamParams::defaults_for(true)).
    ap.add_argument("--linear-batch-size", type=int, default=256)
    ap.add_argument("--linear-lr", type=float, default=0.2)
    ap.add_argument("--linear-epochs", type=int, default=100)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--val-share", type=float, default=0.15,
                    help="share of each label of labelled/ that validates")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = load_data(args)
    loaded = time.perf_counter()
    backbone, losses = pretext(data["pool"], args)
    pretrained = time.perf_counter()
    linear_accuracy, linear_epoch = linear_protocol(backbone, data, args, "linear")
    baseline_accuracy, baseline_epoch = linear_protocol(None, data, args, "baseline")
    done = time.perf_counter()
    print(json.dumps({
        "side": "pytorch", "seed": args.seed, "pretext_images": data["pool"].shape[0],
        "epochs": args.epochs, "batch_size": args.batch_size, "peak_lr": peak_lr(args),
        "final_loss": losses[-1], "chance": math.log(2 * args.batch_size - 1),
        "linear_accuracy": linear_accuracy, "baseline_accuracy": baseline_accuracy,
        "linear_best_epoch": linear_epoch, "baseline_best_epoch": baseline_epoch,
        "train_images": len(data["splits"][0][1]), "val_images": len(data["splits"][1][1]),
        "test_images": len(data["splits"][2][1]),
        "seconds": done - started, "load_seconds": loaded - started,
        "pretext_seconds": pretrained - loaded,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
