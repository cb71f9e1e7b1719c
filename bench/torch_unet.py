"""The peer of `medpipe bench unet`: nnU-Net's plain conv U-Net (two conv ->
InstanceNorm(affine) -> LeakyReLU(0.01) per stage, strided-conv downsampling,
transposed-conv upsampling, concatenated skips, 1x1x1 head), nnU-Net's
Dice + CE loss and SGD (Nesterov, momentum 0.99, weight decay 3e-5, grad-norm
clip 12) in PyTorch, fp32, on 2 threads. Prints one JSON line with the same
keys as medpipe (train step: mean and median of the timed steps after one
warm-up step; forward: median of 3 after a warm-up). Usage: torch_unet.py [--patch 64] [--batch 2]
[--features 32,64,128,256,320] [--steps 3] [--threads 2]"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout, stride):
    return [nn.Conv3d(cin, cout, 3, stride, 1), nn.InstanceNorm3d(cout, eps=1e-5, affine=True),
            nn.LeakyReLU(0.01, inplace=True)]


class UNet(nn.Module):
    def __init__(self, feats, cin=1, classes=2):
        super().__init__()
        self.enc = nn.ModuleList()
        c = cin
        for i, f in enumerate(feats):
            self.enc.append(nn.Sequential(*block(c, f, 1 if i == 0 else 2), *block(f, f, 1)))
            c = f
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        for i in range(len(feats) - 1, 0, -1):
            self.up.append(nn.ConvTranspose3d(feats[i], feats[i - 1], 2, 2))
            self.dec.append(nn.Sequential(*block(2 * feats[i - 1], feats[i - 1], 1), *block(feats[i - 1], feats[i - 1], 1)))
        self.head = nn.Conv3d(feats[0], classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        skips = []
        for e in self.enc:
            x = e(x)
            skips.append(x)
        for i, (u, d) in enumerate(zip(self.up, self.dec)):
            x = d(torch.cat((u(x), skips[-(i + 2)]), 1))
        return self.head(x)


def dc_ce_loss(logits, target, smooth=1e-5):
    ce = F.cross_entropy(logits, target)
    p = torch.softmax(logits, 1)[:, 1:]
    y = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].float()
    axes = (2, 3, 4)
    inter, pred, gt = (p * y).sum(axes), p.sum(axes), y.sum(axes)
    dc = (2 * inter + smooth) / torch.clip(gt + pred + smooth, 1e-8)
    return ce - dc.mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--features", default="32,64,128,256,320")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    feats = [int(f) for f in a.features.split(",")]
    net = UNet(feats)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    x = torch.randn(a.batch, 1, a.patch, a.patch, a.patch)
    t = (torch.rand(a.batch, a.patch, a.patch, a.patch) > 0.7).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = dc_ce_loss(net(x), t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()

    step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        net(x)
        fwd = []
        for _ in range(3):
            t0 = time.perf_counter()
            net(x)
            fwd.append(time.perf_counter() - t0)
    print(json.dumps({"impl": "pytorch " + torch.__version__, "train_step_ms": statistics.mean(times) * 1e3,
                      "train_step_ms_median": statistics.median(times) * 1e3,
                      "forward_ms": statistics.median(fwd) * 1e3,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
