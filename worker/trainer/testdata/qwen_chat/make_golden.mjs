// Golden renderings of Qwen2-VL's chat template (chat_template.jinja, the
// template Qwen2-VL-7B-Instruct and Qwen2.5-VL-7B-Instruct ship) by an
// independent Jinja implementation, @huggingface/jinja. Writes golden.jsonl:
// {"messages", "add_generation_prompt", "add_vision_id", "text"} per line.
//
//   cd worker/trainer/testdata/qwen_chat
//   npm install --no-save @huggingface/jinja@0.5.13
//   node make_golden.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = path.dirname(fileURLToPath(import.meta.url));
const template = new Template(fs.readFileSync(path.join(here, "chat_template.jinja"), "utf8"));

const img = { type: "image", image: "file:///a.png" };
const conversations = [
  [{ role: "user", content: "What is 2+2?" }],
  [{ role: "user", content: "What is 2+2?" }, { role: "assistant", content: "4" }],
  [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }],
  [{ role: "user", content: [img, { type: "text", text: "Which option is correct?\nA. 1\nB. 2" }] }],
  [{ role: "user", content: [{ type: "text", text: "Text first, " }, img, { type: "text", text: " then more." }] },
   { role: "assistant", content: [{ type: "text", text: "B" }] }],
  [{ role: "user", content: [img, img, { type: "text", text: "Compare the two." }] }],
  [{ role: "user", content: [{ image: "x.jpg" }, { text: "No type keys." }] }],
  [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }, { type: "text", text: "url" }] }],
  [{ role: "user", content: [{ type: "video", video: "v.mp4" }, { type: "text", text: "Describe the video." }] }],
  [{ role: "user", content: [img, { type: "text", text: "Q1" }] }, { role: "assistant", content: "A1" },
   { role: "user", content: [img, { type: "text", text: "Q2" }] }, { role: "assistant", content: "A2" }],
  [{ role: "system", content: [{ type: "text", text: "System as parts." }] }, { role: "user", content: "x" }],
  [{ role: "user", content: "" }],
  [{ role: "user", content: "Unicode: 你好 😀 \\boxed{42} $x^2$\n\n  indented" }],
  [{ role: "user", content: [{ type: "unknown", data: 1 }, { type: "text", text: "only text shows" }] }],
];
const lines = [];
for (const messages of conversations)
  for (const add_generation_prompt of [false, true])
    for (const add_vision_id of [false, true])
      lines.push(JSON.stringify({ messages, add_generation_prompt, add_vision_id,
        text: template.render({ messages, add_generation_prompt, add_vision_id }) }));
fs.writeFileSync(path.join(here, "golden.jsonl"), lines.join("\n") + "\n");
console.log(`wrote ${lines.length} renderings`);
