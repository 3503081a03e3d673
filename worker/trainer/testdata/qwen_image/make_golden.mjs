// Golden outputs for dcvlr-train's Qwen2-VL image processor from an
// independent implementation: transformers.js' Qwen2VLImageProcessor
// (@huggingface/transformers) with Qwen2-VL's preprocessor_config.json.
// Writes next to this script:
//   preprocessor_config.json  the config used (Qwen2-VL-7B-Instruct's values)
//   smart_resize.json         [h, w, min_pixels, max_pixels, [w', h']] (the
//                             processor's width-first order) or "error"
//                             for many sizes
//   golden.safetensors        image_N (U8 [h, w, 3]), pixel_values_N (F32),
//                             grid_N (I64 [3]) for images already at their
//                             target size (so no resampling is involved)
//
//   cd worker/trainer/testdata/qwen_image
//   npm install --no-save --ignore-scripts @huggingface/transformers@4.3.2
//   node make_golden.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { RawImage } from "@huggingface/transformers";
import { Qwen2VLImageProcessor } from "@huggingface/transformers";

const here = path.dirname(fileURLToPath(import.meta.url));
const config = {
  do_convert_rgb: true, do_normalize: true, do_rescale: true, do_resize: true,
  image_mean: [0.48145466, 0.4578275, 0.40821073],
  image_std: [0.26862954, 0.26130258, 0.27577711],
  image_processor_type: "Qwen2VLImageProcessor",
  max_pixels: 12845056, merge_size: 2, min_pixels: 3136, patch_size: 14,
  processor_class: "Qwen2VLProcessor", resample: 3, rescale_factor: 0.00392156862745098,
  size: { longest_edge: 12845056, shortest_edge: 3136 }, temporal_patch_size: 2,
};
fs.writeFileSync(path.join(here, "preprocessor_config.json"), JSON.stringify(config, null, 2) + "\n");

let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);

const sizes = [];
for (const [h, w] of [[1, 1], [10, 10], [27, 28], [28, 28], [56, 56], [100, 100], [224, 224],
                      [480, 640], [1080, 1920], [2000, 3000], [4000, 6000], [10, 2000],
                      [20, 4000], [3, 700], [28, 5600], [5000, 20], [333, 777], [12345, 678]])
  sizes.push([h, w, 3136, 12845056]);
for (let i = 0; i < 120; ++i) {
  const h = 1 + Math.floor(rand() * 3000), w = 1 + Math.floor(rand() * 3000);
  const min = [3136, 256 * 28 * 28, 512 * 28 * 28][i % 3];
  const max = [12845056, 1280 * 28 * 28, 16384 * 28 * 28][Math.floor(i / 3) % 3];
  sizes.push([h, w, min, max]);
}
// The processor's own sizing (smart_resize with factor 28).
const resized = sizes.map(([h, w, min, max]) => {
  const p = new Qwen2VLImageProcessor({ ...config, min_pixels: min, max_pixels: max });
  try { return [h, w, min, max, p.get_resize_output_image_size({ height: h, width: w })]; }
  catch (e) { return [h, w, min, max, "error"]; }
});
fs.writeFileSync(path.join(here, "smart_resize.json"),
                 "[\n" + resized.map((r) => JSON.stringify(r)).join(",\n") + "\n]\n");

const processor = new Qwen2VLImageProcessor(config);
const tensors = {};
// Sides multiples of 28 and areas within [min_pixels, max_pixels]: no resize.
const images = [[56, 56], [56, 84], [112, 56], [84, 140]];
for (let i = 0; i < images.length; ++i) {
  const [h, w] = images[i];
  const data = new Uint8ClampedArray(h * w * 3);
  for (let j = 0; j < data.length; ++j) data[j] = Math.floor(rand() * 256);
  const image = new RawImage(data, w, h, 3);
  const out = await processor(image);
  tensors[`image_${i}`] = { dtype: "U8", shape: [h, w, 3], data: new Uint8Array(data.buffer) };
  tensors[`pixel_values_${i}`] = { dtype: "F32", shape: out.pixel_values.dims,
                                   data: new Uint8Array(out.pixel_values.data.buffer) };
  tensors[`grid_${i}`] = { dtype: "I64", shape: [3],
                           data: new Uint8Array(BigInt64Array.from(out.image_grid_thw.data.map(BigInt)).buffer) };
}

// safetensors: 8-byte little-endian header length, JSON header, data.
const header = {};
let offset = 0;
for (const [name, t] of Object.entries(tensors)) {
  header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
  offset += t.data.length;
}
let json = JSON.stringify(header);
while ((8 + json.length) % 8) json += " ";
const size = Buffer.alloc(8);
size.writeBigUInt64LE(BigInt(json.length));
fs.writeFileSync(path.join(here, "golden.safetensors"),
                 Buffer.concat([size, Buffer.from(json), ...Object.values(tensors).map((t) => Buffer.from(t.data))]));
console.log(`wrote ${resized.length} smart_resize cases and ${images.length} images`);
