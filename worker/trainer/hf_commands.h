// dcvlr-train's Hugging Face checkpoint subcommands:
//
//   dcvlr-train hf-export --model DIR --out DIR [--dtype bf16|f16|f32]
//                         [--max-shard-size BYTES[K|M|G]]
//       Loads a Qwen2-VL / Qwen2.5-VL checkpoint directory and writes it as
//       a new one that transformers loads (see hf_export.h), tokenizer and
//       processor files copied along.
//   dcvlr-train hf-forward --model DIR --inputs FILE.safetensors
//                          --out FILE.safetensors [--device cpu|cuda]
//                          [--dtype f32|bf16] [--adamw-step]
//       Runs the model on a batch (input_ids, attention_mask, pixel_values,
//       image_grid_thw, optional labels) and writes logits, image_embeds,
//       position_ids and, with labels, loss; --adamw-step adds grad_norm and
//       loss_after_step (one AdamW step: lr 1e-3, betas 0.9/0.999, eps 1e-8,
//       weight decay 0.1). For parity checks against transformers.
//   dcvlr-train tokenize --tokenizer PATH
//       Reads lines from stdin and prints each line's token ids,
//       space-separated, one line per input line. PATH is a tokenizer.json
//       or a checkpoint directory holding one.
#ifndef DCVLR_WORKER_TRAINER_HF_COMMANDS_H_
#define DCVLR_WORKER_TRAINER_HF_COMMANDS_H_

namespace dcvlr::trainer {

int HfExportMain(int argc, char** argv);
int HfForwardMain(int argc, char** argv);
int TokenizeMain(int argc, char** argv);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_HF_COMMANDS_H_
