#!/usr/bin/python3
"""The benchmark's reference: the same transformer as dipaco (pre-LayerNorm,
tanh GELU MLP 4x, learned positions, head tied to the token embedding, byte
vocabulary) trained with PyTorch's AdamW on random bytes. Prints one JSON line.

  torch_baseline.py --d 256 --layers 4 --heads 4 --T 256 --B 8 --steps 10 [--bf16] [--device cpu|cuda]
"""
import argparse, json, resource, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / (C // self.h) ** 0.5
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), 1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, d, layers, heads, T):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(256, d), nn.Embedding(T, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.lnf = nn.LayerNorm(d)

    def forward(self, idx, tgt):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.lnf(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().view(-1, 256), tgt.view(-1))


def main():
    p = argparse.ArgumentParser()
    for k, v in dict(d=256, layers=4, heads=4, T=256, B=8, steps=10).items():
        p.add_argument("--" + k, type=int, default=v)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = GPT(a.d, a.layers, a.heads, a.T).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    idx = torch.randint(0, 256, (a.B, a.T), device=dev)
    tgt = torch.randint(0, 256, (a.B, a.T), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    tok_s = a.B * a.T * a.steps / sec
    n_nonemb = a.layers * (12 * a.d * a.d + 13 * a.d) + 2 * a.d
    flops = 6 * n_nonemb + 12 * a.layers * a.T * a.d
    print(json.dumps(dict(d=a.d, layers=a.layers, T=a.T, B=a.B, threads=torch.get_num_threads(),
                          precision="bf16" if a.bf16 else "fp32", device=a.device, tokens_per_s=round(tok_s, 1),
                          gflops=round(tok_s * flops / 1e9, 2),
                          peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                          torch=torch.__version__)))


if __name__ == "__main__":
    main()
