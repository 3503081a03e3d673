#!/usr/bin/python3
"""PyTorch DDP baseline for the dcvlr-train benchmark.

The same tiny-vlm model as worker/trainer/model.cc (vision tower, 2x2 merger,
Qwen2 decoder with GQA, RoPE, SwiGLU; logits only at scored positions), the
same AdamW + cosine schedule + clipping, trained with DistributedDataParallel
over Gloo, one process per rank and one intra-op thread each. Batches are
fixed-length (96 tokens) synthetic tensors, generated up front so the Python
side pays nothing for data loading.

Run by bench/trainer_bench.sh, or by hand:
  /usr/bin/python3 bench/ddp_baseline.py --world 2 --steps 60 --batch 8
Prints one line: `ddp samples_per_s=<float> ...`.
"""

import argparse
import math
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

IMAGE, PATCH, VW, VLAYERS, VHEADS, VMLP = 32, 4, 128, 2, 4, 512
MERGE, MERGER_HIDDEN = 2, 256
VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER = 320, 256, 4, 8, 2, 704
EPS, THETA, SEQ = 1e-6, 10000.0, 96
IMAGE_PAD = 261


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * self.weight


def attention(q, k, v, causal):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        t = q.size(2)
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


class VisionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(VW), RMSNorm(VW)
        self.qkv, self.proj = nn.Linear(VW, 3 * VW), nn.Linear(VW, VW)
        self.fc1, self.fc2 = nn.Linear(VW, VMLP), nn.Linear(VMLP, VW)

    def forward(self, h):
        b, n, _ = h.shape
        qkv = self.qkv(self.norm1(h)).view(b, n, 3, VHEADS, VW // VHEADS).permute(2, 0, 3, 1, 4)
        a = attention(qkv[0], qkv[1], qkv[2], False).transpose(1, 2).reshape(b, n, VW)
        h = h + self.proj(a)
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        hd = HIDDEN // HEADS
        self.in_norm, self.post_norm = RMSNorm(HIDDEN), RMSNorm(HIDDEN)
        self.q = nn.Linear(HIDDEN, HIDDEN)
        self.k = nn.Linear(HIDDEN, KV_HEADS * hd)
        self.v = nn.Linear(HIDDEN, KV_HEADS * hd)
        self.o = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.gate = nn.Linear(HIDDEN, INTER, bias=False)
        self.up = nn.Linear(HIDDEN, INTER, bias=False)
        self.down = nn.Linear(INTER, HIDDEN, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        hd = HIDDEN // HEADS

        def rope(q):
            q1, q2 = q.chunk(2, -1)
            return q * cos + torch.cat([-q2, q1], -1) * sin

        n = self.in_norm(x)
        q = rope(self.q(n).view(b, t, HEADS, hd).transpose(1, 2))
        k = rope(self.k(n).view(b, t, KV_HEADS, hd).transpose(1, 2))
        v = self.v(n).view(b, t, KV_HEADS, hd).transpose(1, 2)
        g = HEADS // KV_HEADS
        k = k.unsqueeze(2).expand(b, KV_HEADS, g, t, hd).reshape(b, HEADS, t, hd)
        v = v.unsqueeze(2).expand(b, KV_HEADS, g, t, hd).reshape(b, HEADS, t, hd)
        a = attention(q, k, v, True).transpose(1, 2).reshape(b, t, HIDDEN)
        x = x + self.o(a)
        n2 = self.post_norm(x)
        return x + self.down(F.silu(self.gate(n2)) * self.up(n2))


class TinyVlm(nn.Module):
    def __init__(self):
        super().__init__()
        n = (IMAGE // PATCH) ** 2
        self.patch = nn.Linear(PATCH * PATCH * 3, VW)
        self.pos = nn.Parameter(torch.randn(n, VW) * 0.02)
        self.vblocks = nn.ModuleList(VisionBlock() for _ in range(VLAYERS))
        self.merger_norm = RMSNorm(VW)
        self.merger = nn.Sequential(nn.Linear(VW * MERGE * MERGE, MERGER_HIDDEN), nn.GELU(),
                                    nn.Linear(MERGER_HIDDEN, HIDDEN))
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = RMSNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        hd = HIDDEN // HEADS
        inv = 1.0 / THETA ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        f = torch.outer(torch.arange(SEQ, dtype=torch.float64), inv)
        emb = torch.cat([f, f], -1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def vision(self, images):
        b, side = images.size(0), IMAGE // PATCH
        x = images.float() * (2.0 / 255.0) - 1.0
        x = x.view(b, side, PATCH, side, PATCH, 3).permute(0, 1, 3, 2, 4, 5)
        h = self.patch(x.reshape(b, side * side, -1)) + self.pos
        for blk in self.vblocks:
            h = blk(h)
        ms = side // MERGE
        h = self.merger_norm(h).view(b, ms, MERGE, ms, MERGE, VW).permute(0, 1, 3, 2, 4, 5)
        return self.merger(h.reshape(b, ms * ms, -1))

    def forward(self, tokens, images, loss_index, targets):
        b, t = tokens.shape
        x = self.embed(tokens).masked_scatter(tokens.eq(IMAGE_PAD).unsqueeze(-1), self.vision(images))
        cos, sin = self.cos[:t], self.sin[:t]
        for layer in self.layers:
            x = layer(x, cos, sin)
        h = self.norm(x.reshape(b * t, HIDDEN).index_select(0, loss_index))
        return F.cross_entropy(self.lm_head(h), targets)


def make_batches(rank, count, batch):
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for _ in range(count):
        tokens = torch.randint(0, 256, (batch, SEQ), generator=g)
        tokens[:, 7:7 + 16] = IMAGE_PAD
        images = torch.randint(0, 256, (batch, IMAGE, IMAGE, 3), dtype=torch.uint8, generator=g)
        # Score the last two positions of each row, like a one-letter answer.
        idx = torch.cat([torch.tensor([i * SEQ + SEQ - 3, i * SEQ + SEQ - 2]) for i in range(batch)])
        out.append((tokens, images, idx, tokens.view(-1)[idx + 1]))
    return out


def worker(rank, args):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    torch.manual_seed(0)
    model = TinyVlm()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    batches = make_batches(rank, 8, args.batch)
    start = None
    for step in range(args.steps):
        if step == args.warmup:
            dist.barrier()
            start = time.perf_counter()
        tokens, images, idx, targets = batches[step % len(batches)]
        loss = ddp(tokens, images, idx, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    loss.item()
    dist.barrier()
    elapsed = time.perf_counter() - start
    timed = args.steps - args.warmup
    if rank == 0:
        params = sum(p.numel() for p in model.parameters())
        print(f"ddp samples_per_s={timed * args.batch * args.world / elapsed:.2f} "
              f"step_time_s={elapsed / timed:.4f} params={params} torch={torch.__version__}",
              flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--port", type=int, default=29611)
    args = p.parse_args()
    os.environ["MASTER_PORT"] = str(args.port)
    mp.spawn(worker, args=(args,), nprocs=args.world)


if __name__ == "__main__":
    main()
