"""The checks of scripts/gpu-parity.sh: dcvlr-train hf-forward / hf-export
against transformers on cuda:0. Usage: gpu_parity.py DCVLR_TRAIN WORK_DIR
(WORK_DIR/fx holds make_fixtures.py's output)."""
import os
import subprocess
import sys

import torch
import transformers
from safetensors.torch import load_file

# TF32 would make transformers' Conv3d patch embedding the least exact part.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

binary, work = sys.argv[1], sys.argv[2]
fx = os.path.join(work, "fx")
inputs = load_file(os.path.join(fx, "inputs.safetensors"))
failed = []


def check(name, ok, detail):
    print(f"gpu-parity: {'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failed.append(name)


def ours(model_dir, dtype, step):
    out = os.path.join(work, f"out-{os.path.basename(model_dir)}-{dtype}.safetensors")
    cmd = [binary, "hf-forward", "--model", model_dir, "--inputs",
           os.path.join(fx, "inputs.safetensors"), "--out", out,
           "--device", "cuda", "--dtype", dtype]
    if step:
        cmd.append("--adamw-step")
    subprocess.run(cmd, check=True)
    return load_file(out)


def theirs(model_dir, dtype, step=False):
    cls = getattr(transformers, transformers.AutoConfig.from_pretrained(
        model_dir).architectures[0])
    model = cls.from_pretrained(model_dir, dtype=dtype).cuda()
    batch = {k: v.cuda() for k, v in inputs.items()}
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    out = model(**batch)
    res = {"logits": out.logits.float().detach(), "loss": out.loss.detach()}
    if step:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999),
                                eps=1e-8, weight_decay=0.1)
        out.loss.backward()
        res["grad_norm"] = torch.cat([p.grad.flatten() for p in model.parameters()
                                      if p.grad is not None]).norm()
        opt.step()
        with torch.no_grad():
            res["loss_after_step"] = model(**batch).loss
    return res


mask = inputs["attention_mask"].bool().cuda().unsqueeze(-1)


def real(t):
    return t.cuda().float().masked_select(mask.expand_as(t.cuda()))


for name in ("qwen2-vl-tiny", "qwen2_5-vl-tiny"):
    d = os.path.join(fx, name)
    ref = theirs(d, torch.float32, step=True)
    got = ours(d, "f32", step=True)
    diff = (real(got["logits"]) - real(ref["logits"])).abs().max().item()
    check(f"{name} fp32 logits", diff < 1e-4, f"max |diff| {diff:.3g}")
    for key, tol in (("loss", 1e-5), ("grad_norm", 1e-4), ("loss_after_step", 1e-4)):
        a, b = got[key].item(), ref[key].item()
        check(f"{name} fp32 {key}", abs(a - b) <= tol * max(1.0, abs(b)),
              f"{a:.6f} vs transformers {b:.6f}")

    truth = real(ref["logits"])
    ref16 = theirs(d, torch.bfloat16)
    got16 = ours(d, "bf16", step=False)
    e_ours = (real(got16["logits"]) - truth).abs().max().item()
    e_hf = (real(ref16["logits"]) - truth).abs().max().item()
    check(f"{name} bf16 logits", e_ours <= 2 * e_hf + 1e-2,
          f"max |diff| from fp32: ours {e_ours:.3g}, transformers {e_hf:.3g}")

    exported = os.path.join(work, f"export-{name}")
    dtype = "bf16" if "2_5" in name else "f32"
    subprocess.run([binary, "hf-export", "--model", d, "--out", exported,
                    "--dtype", dtype, "--max-shard-size", "100KB"], check=True)
    a = theirs(d, torch.float32)["logits"]
    b = theirs(exported, torch.float32)["logits"]
    check(f"{name} export ({dtype}) loads in transformers", torch.equal(a, b),
          f"max |diff| {(a - b).abs().max().item():.3g}, files "
          f"{sorted(f for f in os.listdir(exported) if f.endswith('.json'))}")

print("gpu-parity:", "FAILED " + ", ".join(failed) if failed else "all checks passed")
sys.exit(1 if failed else 0)
