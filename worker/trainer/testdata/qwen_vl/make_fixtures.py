#!/usr/bin/env python3
"""Golden fixtures for dcvlr-train's Qwen2-VL / Qwen2.5-VL implementation.

Builds two tiny, randomly initialised models with Hugging Face transformers
from config.json files written the way the Hub's Qwen checkpoints are, saves
them with save_pretrained, and records transformers' outputs on one batch
with images, so that the C++ tests compare against the reference without
Python:

  qwen2-vl-tiny/     Qwen2VLForConditionalGeneration, tied embeddings,
                     F32 weights in one model.safetensors
  qwen2_5-vl-tiny/   Qwen2_5_VLForConditionalGeneration, untied, window
                     attention (window_size 56: 2x2 merged patches per
                     window) with one full-attention block; BF16 weights
                     sharded with model.safetensors.index.json (the fp32
                     reference is computed from the same bf16-rounded
                     weights, so it is exact for a loader that upcasts)
  inputs.safetensors the batch both models read
  <model>/reference.safetensors  transformers' outputs (fp32):
      logits [B, L, V], loss (labels: the input ids, -100 on image pads and
      padding), position_ids [3, B, L] and rope_deltas from get_rope_index,
      image_embeds [N, H] (the vision tower after the merger),
      hidden_N [B, L, H] (each decoder layer's output; the last is after the
      final norm, as transformers reports it), and after one AdamW step
      (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.1) on that loss:
      loss_after_step, grad_norm (the global L2 norm before the step)
  <model>/manifest.json  versions, the runtime parameter names, the saved
      tensor names and the config transformers wrote

Run where torch and transformers are installed (no network needed):
  python3 worker/trainer/testdata/qwen_vl/make_fixtures.py OUT_DIR
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file

TOKENS = {
    "bos_token_id": 250, "eos_token_id": 250, "vision_start_token_id": 248,
    "vision_end_token_id": 249, "vision_token_id": 247, "image_token_id": 251,
    "video_token_id": 252,
}

TEXT = {
    "attention_dropout": 0.0, "hidden_act": "silu", "hidden_size": 64,
    "initializer_range": 0.02, "intermediate_size": 96,
    "max_position_embeddings": 4096, "max_window_layers": 2,
    "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0, "sliding_window": 4096,
    "use_cache": True, "use_sliding_window": False, "vocab_size": 256,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "torch_dtype": "float32",
}

QWEN2_VL = dict(TEXT, **TOKENS, **{
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl", "tie_word_embeddings": True,
    "vision_config": {
        "depth": 2, "embed_dim": 32, "mlp_ratio": 4, "num_heads": 2,
        "in_chans": 3, "hidden_size": 64, "patch_size": 14,
        "spatial_merge_size": 2, "spatial_patch_size": 14,
        "temporal_patch_size": 2, "hidden_act": "quick_gelu",
    },
})

QWEN2_5_VL = dict(TEXT, **TOKENS, **{
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl", "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vision_config": {
        "depth": 3, "hidden_act": "silu", "hidden_size": 32,
        "intermediate_size": 48, "num_heads": 2, "in_chans": 3,
        "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "window_size": 56,
        "fullatt_block_indexes": [1], "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
})

# Images as (t, h, w) patch grids: 2 and 1 images in the two rows.
GRIDS = [[1, 6, 10], [1, 4, 4], [1, 4, 6]]


def make_inputs():
    g = torch.Generator().manual_seed(1234)
    patch = 3 * 2 * 14 * 14
    n = sum(t * h * w for t, h, w in GRIDS)
    pixel_values = torch.randn(n, patch, generator=g)
    pads = [t * h * w // 4 for t, h, w in GRIDS]
    s, e, img = (TOKENS["vision_start_token_id"], TOKENS["vision_end_token_id"],
                 TOKENS["image_token_id"])

    def text(k):
        return torch.randint(0, 240, (k,), generator=g).tolist()

    row0 = (text(5) + [s] + [img] * pads[0] + [e] + text(7) + [s] +
            [img] * pads[1] + [e] + text(9))
    row1 = text(3) + [s] + [img] * pads[2] + [e] + text(12)
    length = max(len(row0), len(row1))
    ids = torch.zeros(2, length, dtype=torch.int64)
    mask = torch.zeros(2, length, dtype=torch.int64)
    for r, row in enumerate([row0, row1]):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    labels = ids.clone()
    labels[(ids == img) | (mask == 0)] = -100
    return {
        "input_ids": ids, "attention_mask": mask, "labels": labels,
        # transformers >= 5 asks for the processor's token types (1: image).
        "mm_token_type_ids": (ids == img).to(torch.int64),
        "pixel_values": pixel_values,
        "image_grid_thw": torch.tensor(GRIDS, dtype=torch.int64),
    }


def first_tensor(out):
    if torch.is_tensor(out):
        return out
    for key in ("pooler_output", "last_hidden_state"):
        value = getattr(out, key, None)
        if torch.is_tensor(value):
            return value
    return out[0]


def build(config_dict, out_dir, bf16_weights, shard):
    os.makedirs(out_dir, exist_ok=True)
    src = out_dir + ".hub-config"
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2)
    config = transformers.AutoConfig.from_pretrained(src)
    shutil.rmtree(src)
    cls = getattr(transformers, config_dict["architectures"][0])
    torch.manual_seed(7)
    model = cls(config).float().eval()
    # Make every weight visible in the output: random, not the zero / one
    # initialisations of biases and norms.
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 +
                    (1.0 if "norm" in name or "ln_q" in name else 0.0))
            if bf16_weights:
                p.copy_(p.bfloat16().float())
    return model


def visual_of(model):
    for obj in (model, getattr(model, "model", None)):
        if obj is not None and hasattr(obj, "visual"):
            return obj.visual
    raise RuntimeError("no vision tower found")


def rope_index(model, inputs):
    for obj in (getattr(model, "model", None), model):
        if obj is not None and hasattr(obj, "get_rope_index"):
            for extra in ({"mm_token_type_ids": inputs["mm_token_type_ids"]}, {}):
                try:
                    return obj.get_rope_index(
                        input_ids=inputs["input_ids"],
                        image_grid_thw=inputs["image_grid_thw"],
                        attention_mask=inputs["attention_mask"], **extra)
                except TypeError as e:
                    print("get_rope_index:", e)
    return None


def forward(model, inputs, **kwargs):
    args = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                   "image_grid_thw", "labels")}
    try:
        return model(**args, mm_token_type_ids=inputs["mm_token_type_ids"], **kwargs)
    except TypeError:
        return model(**args, **kwargs)


def reference(model, inputs, out_dir):
    ref = {}
    with torch.no_grad():
        ref["image_embeds"] = first_tensor(visual_of(model)(
            inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]))
        ri = rope_index(model, inputs)
        if ri is not None:
            ref["position_ids"], ref["rope_deltas"] = ri[0], ri[1]
    model.train()  # no dropout in these configs; train() for the step
    out = forward(model, inputs, output_hidden_states=True)
    ref["logits"] = out.logits.detach()
    ref["loss"] = out.loss.detach().reshape(1)
    for i, h in enumerate(out.hidden_states):
        ref[f"hidden_{i}"] = h.detach()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=0.1)
    out.loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    ref["grad_norm"] = torch.cat(grads).norm().reshape(1).detach()
    opt.step()
    with torch.no_grad():
        after = forward(model, inputs)
    ref["loss_after_step"] = after.loss.detach().reshape(1)
    ref = {k: v.contiguous().float() if v.is_floating_point() else v.contiguous()
           for k, v in ref.items()}
    save_file(ref, os.path.join(out_dir, "reference.safetensors"))
    print(out_dir, {k: tuple(v.shape) for k, v in ref.items()},
          "loss", float(ref["loss"]), "after", float(ref["loss_after_step"]))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.abspath(__file__))
    os.makedirs(out, exist_ok=True)
    print("torch", torch.__version__, "transformers", transformers.__version__)
    inputs = make_inputs()
    save_file({k: v.contiguous() for k, v in inputs.items()},
              os.path.join(out, "inputs.safetensors"))
    for name, config, bf16, shard in (
            ("qwen2-vl-tiny", QWEN2_VL, False, None),
            ("qwen2_5-vl-tiny", QWEN2_5_VL, True, "150KB")):
        d = os.path.join(out, name)
        model = build(config, d, bf16, shard)
        # Save before the reference's training step changes the weights.
        save_model = model
        if bf16:
            save_model = build(config, d, bf16, shard).to(torch.bfloat16)
        kwargs = {"safe_serialization": True}
        if shard:
            kwargs["max_shard_size"] = shard
        save_model.save_pretrained(d, **kwargs)
        files = sorted(os.listdir(d))
        saved = {}
        from safetensors import safe_open
        for fn in files:
            if fn.endswith(".safetensors") and fn != "reference.safetensors":
                with safe_open(os.path.join(d, fn), "pt") as f:
                    for k in f.keys():
                        t = f.get_slice(k)
                        saved[k] = [str(t.get_dtype()), list(t.get_shape())]
        with open(os.path.join(d, "config.json")) as f:
            written = json.load(f)
        manifest = {
            "torch": torch.__version__, "transformers": transformers.__version__,
            "runtime_parameters": {k: list(v.shape)
                                   for k, v in model.state_dict().items()},
            "saved_tensors": saved, "files": files, "config_written": written,
        }
        reference(model, inputs, d)
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        # The config as the Hub writes it, for the loader's legacy path.
        with open(os.path.join(d, "hub_config.json"), "w") as f:
            json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
