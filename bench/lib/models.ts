/**
 * Realistic model repositories for the benchmarks, at a chosen size: Llama-architecture tensor names,
 * shapes and counts (embeddings, per layer q/k/v/o, gate/up/down, two norms; final norm, lm_head; all
 * BF16, as a Llama-2 checkpoint), sharded in model order like `save_pretrained` with an index, plus the
 * config, generation config and tokenizer files a Hub repo carries. A 13.5 GB request gives exactly the
 * shapes of Llama-2-7B (hidden 4096, 32 layers, 291 tensors).
 *
 * Also: a fine-tune that changes only the top N layers (test/fixtures makeFineTune), and a resharder
 * that writes the same tensors into a different number of shards (what a re-save with another
 * max_shard_size does). Tensor bytes are test/fixtures' deterministic keystream: same inputs, same bytes.
 */
import { createHash } from "node:crypto";
import { copyFile, mkdir, open, readFile, readdir, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { encodeHeader, parseHeader, readHeaderLength, tensorByteSize } from "../../src/format/safetensors.js";
import { makeFineTune, splitEvenly, writeSafetensorsFile, type GenTensor } from "../../test/fixtures/models.js";

export interface LlamaShape {
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  vocab: number;
}

/** Members of the Llama family by width (intermediate = the checkpoints' own, head_dim 64 or 128). */
const FAMILY = [
  { hidden: 512, intermediate: 1408, heads: 8 },
  { hidden: 1024, intermediate: 2816, heads: 8 },
  { hidden: 2048, intermediate: 5632, heads: 16 },
  { hidden: 3072, intermediate: 8192, heads: 24 },
  { hidden: 4096, intermediate: 11008, heads: 32 },
] as const;
const VOCAB = 32000;
const BF16 = 2;

export function shapeBytes(s: LlamaShape): number {
  const kv = (s.hidden / s.heads) * s.kvHeads;
  const perLayer = (2 * s.hidden * s.hidden + 2 * kv * s.hidden + 3 * s.hidden * s.intermediate + 2 * s.hidden) * BF16;
  return (2 * s.vocab * s.hidden + s.hidden) * BF16 + s.layers * perLayer;
}

/**
 * The widest Llama shape that still has a plausible depth (at least hidden/128 layers, and 4) at about
 * `bytes`: 100 MB -> hidden 512 x 5 layers, 512 MB -> 1024 x 15, 2 GB -> 2048 x 17, 13.5 GB -> 4096 x 32.
 */
export function shapeForSize(bytes: number): LlamaShape {
  let pick: LlamaShape | undefined;
  for (const f of FAMILY) {
    const s: LlamaShape = { ...f, kvHeads: f.heads, vocab: VOCAB, layers: 0 };
    const fixed = shapeBytes(s);
    const perLayer = shapeBytes({ ...s, layers: 1 }) - fixed;
    const layers = Math.round((bytes - fixed) / perLayer);
    if (layers >= Math.max(4, f.hidden / 128)) pick = { ...s, layers };
  }
  return pick ?? { ...FAMILY[0], kvHeads: FAMILY[0].heads, vocab: VOCAB, layers: 4 };
}

const seedOf = (seed: string, name: string) => createHash("sha256").update(`${seed}:${name}`).digest().readUInt32LE(0);

/** The tensors in model (state_dict) order, HF Llama names, all BF16. */
export function llamaTensorsOf(s: LlamaShape, seed = "base"): GenTensor[] {
  const kv = (s.hidden / s.heads) * s.kvHeads;
  const t = (name: string, shape: number[]): GenTensor => ({ name, dtype: "BF16", shape, fill: seedOf(seed, name) });
  const out = [t("model.embed_tokens.weight", [s.vocab, s.hidden])];
  for (let i = 0; i < s.layers; i++) out.push(...layerTensors(s, i, kv).map(([n, sh]) => t(n, sh)));
  out.push(t("model.norm.weight", [s.hidden]), t("lm_head.weight", [s.vocab, s.hidden]));
  return out;
}

function layerTensors(s: LlamaShape, i: number, kv: number): [string, number[]][] {
  const p = `model.layers.${i}`;
  return [
    [`${p}.self_attn.q_proj.weight`, [s.hidden, s.hidden]],
    [`${p}.self_attn.k_proj.weight`, [kv, s.hidden]],
    [`${p}.self_attn.v_proj.weight`, [kv, s.hidden]],
    [`${p}.self_attn.o_proj.weight`, [s.hidden, s.hidden]],
    [`${p}.mlp.gate_proj.weight`, [s.intermediate, s.hidden]],
    [`${p}.mlp.up_proj.weight`, [s.intermediate, s.hidden]],
    [`${p}.mlp.down_proj.weight`, [s.hidden, s.intermediate]],
    [`${p}.input_layernorm.weight`, [s.hidden]],
    [`${p}.post_attention_layernorm.weight`, [s.hidden]],
  ];
}

/** Names of every tensor of the top `n` decoder layers (what a fine-tune of the last layers changes). */
export function topLayerNames(s: LlamaShape, n: number): string[] {
  const kv = (s.hidden / s.heads) * s.kvHeads;
  const out: string[] = [];
  for (let i = Math.max(0, s.layers - n); i < s.layers; i++) out.push(...layerTensors(s, i, kv).map(([name]) => name));
  return out;
}

const sizeOf = (t: { dtype: string; shape: number[] }) => tensorByteSize(t.dtype, t.shape, "<bench>", "");
const pad5 = (n: number) => String(n).padStart(5, "0");
export const shardName = (i: number, n: number) => (n === 1 ? "model.safetensors" : `model-${pad5(i + 1)}-of-${pad5(n)}.safetensors`);

/** What a generated dir was made from, kept beside it (not in it: the dir is committed to the Hub as is). */
export const stampOf = (dir: string) => `${dir}.bench.json`;

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

async function writeIndex(dir: string, groups: { name: string; dtype: string; shape: number[] }[][]): Promise<void> {
  if (groups.length === 1) return;
  const map: Record<string, string> = {};
  let total = 0;
  groups.forEach((g, i) => {
    for (const t of g) {
      map[t.name] = shardName(i, groups.length);
      total += sizeOf(t);
    }
  });
  const weight_map = Object.fromEntries(Object.keys(map).sort().map((k) => [k, map[k]]));
  await writeFile(path.join(dir, "model.safetensors.index.json"), json({ metadata: { total_size: total }, weight_map }));
}

/** config.json, generation_config.json, tokenizer files (a 32k BPE vocabulary with merges, ~1.5 MB), README, .gitattributes. */
async function writeRepoFiles(dir: string, s: LlamaShape): Promise<void> {
  await writeFile(
    path.join(dir, "config.json"),
    json({
      architectures: ["LlamaForCausalLM"],
      attention_bias: false,
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: "silu",
      hidden_size: s.hidden,
      initializer_range: 0.02,
      intermediate_size: s.intermediate,
      max_position_embeddings: 4096,
      model_type: "llama",
      num_attention_heads: s.heads,
      num_hidden_layers: s.layers,
      num_key_value_heads: s.kvHeads,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_theta: 10000,
      tie_word_embeddings: false,
      torch_dtype: "bfloat16",
      transformers_version: "4.46.0",
      use_cache: true,
      vocab_size: s.vocab,
    }),
  );
  await writeFile(path.join(dir, "generation_config.json"), json({ bos_token_id: 1, eos_token_id: 2, do_sample: true, temperature: 0.6, top_p: 0.9, transformers_version: "4.46.0" }));
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  const merges: string[] = [];
  for (let i = 3; i < s.vocab; i++) {
    const a = `▁t${(i * 7919) % 9973}`;
    vocab[`${a}x${i}`] = i;
    if (merges.length < s.vocab - 300) merges.push(`${a} x${i}`);
  }
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  await writeFile(
    path.join(dir, "tokenizer.json"),
    json({
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
      normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }] },
      pre_tokenizer: null,
      post_processor: { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }], pair: [], special_tokens: {} },
      decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }] },
      model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
    }),
  );
  await writeFile(
    path.join(dir, "tokenizer_config.json"),
    json({ add_bos_token: true, add_eos_token: false, bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", pad_token: null, model_max_length: 4096, tokenizer_class: "LlamaTokenizer", clean_up_tokenization_spaces: false, legacy: false }),
  );
  await writeFile(path.join(dir, "special_tokens_map.json"), json({ bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }));
  await writeFile(
    path.join(dir, "README.md"),
    `---\nlicense: llama2\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- llama\n- cake-bench\n---\n\n# Llama-shaped benchmark model\n\nRandom BF16 weights: hidden ${s.hidden}, intermediate ${s.intermediate}, ${s.layers} layers, ${s.heads} heads (${s.kvHeads} KV), vocab ${s.vocab}.\n`,
  );
  await writeFile(path.join(dir, ".gitattributes"), "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\ntokenizer.json filter=lfs diff=lfs merge=lfs -text\n");
}

export interface BenchModel {
  dir: string;
  shape: LlamaShape;
  shards: number;
  /** Bytes of every file of the repo. */
  bytes: number;
  tensors: number;
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(path.join(dir, f))).size;
  return n;
}

/** Writes a Llama-shaped repo of about `bytes` into `dir` (skipped when `dir` already holds the same one). */
export function makeRealisticModel(dir: string, bytes: number, shards = 3, seed = "base"): Promise<BenchModel> {
  return makeModelOfShape(dir, shapeForSize(bytes), shards, seed);
}

/** Writes a Llama repo of exactly `shape` into `dir` (skipped when `dir` already holds the same one). */
export async function makeModelOfShape(dir: string, shape: LlamaShape, shards = 3, seed = "base"): Promise<BenchModel> {
  const tensors = llamaTensorsOf(shape, seed);
  const stamp = stampOf(dir);
  const want = JSON.stringify({ shape, shards, seed, v: 1 });
  if ((await readFile(stamp, "utf8").catch(() => "")) !== want) {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const groups = splitEvenly(tensors, shards);
    for (let i = 0; i < groups.length; i++) await writeSafetensorsFile(path.join(dir, shardName(i, groups.length)), groups[i]!, { format: "pt" });
    await writeIndex(dir, groups);
    await writeRepoFiles(dir, shape);
    await writeFile(stamp, want);
  }
  return { dir, shape, shards, bytes: await repoBytes(dir), tensors: tensors.length };
}

/** Bytes of the repo files. */
export const repoBytes = dirBytes;

/** The base with every tensor of its top `n` layers changed; returns the changed tensor bytes. */
export async function makeTopLayersFineTune(base: BenchModel, out: string, n: number): Promise<{ dir: string; changedBytes: number; changedTensors: number }> {
  const names = topLayerNames(base.shape, n);
  const stamp = stampOf(out);
  const want = JSON.stringify({ base: base.shape, shards: base.shards, ft: n, v: 1 });
  if ((await readFile(stamp, "utf8").catch(() => "")) !== want) {
    await rm(out, { recursive: true, force: true });
    await makeFineTune(base.dir, out, names);
    await writeFile(stamp, want);
  }
  const set = new Set(names);
  const changedBytes = llamaTensorsOf(base.shape).filter((t) => set.has(t.name)).reduce((a, t) => a + sizeOf(t), 0);
  return { dir: out, changedBytes, changedTensors: names.length };
}

interface Located {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  begin: number;
  end: number;
}

export async function readHeaderOf(file: string) {
  const fh = await open(file, "r");
  try {
    const size = (await fh.stat()).size;
    const first8 = Buffer.alloc(8);
    await fh.read(first8, 0, 8, 0);
    const n = readHeaderLength(first8, size, file);
    const buf = Buffer.alloc(n);
    await fh.read(buf, 0, n, 8);
    return parseHeader(buf, size, file);
  } finally {
    await fh.close();
  }
}

export async function copyRange(src: FileHandle, dst: FileHandle, start: number, end: number, buf: Buffer): Promise<void> {
  for (let pos = start; pos < end; ) {
    const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, end - pos), pos);
    if (bytesRead === 0) throw new Error(`reshard: unexpected end of file at ${pos}`);
    let off = 0;
    while (off < bytesRead) off += (await dst.write(buf, off, bytesRead - off)).bytesWritten;
    pos += bytesRead;
  }
}

/**
 * The same tensors written into `shards` new files (new boundaries, new index), every other file copied:
 * what re-saving a checkpoint with another max_shard_size gives. Tensors keep the order they had across
 * the old shards; each new file lays them out by name, as safetensors does.
 */
export async function reshard(srcDir: string, outDir: string, shards: number): Promise<string> {
  const stamp = stampOf(outDir);
  const want = JSON.stringify({ src: await readFile(stampOf(srcDir), "utf8").catch(() => srcDir), shards, v: 1 });
  if ((await readFile(stamp, "utf8").catch(() => "")) === want) return outDir;
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  const files = (await readdir(srcDir)).filter((f) => f.endsWith(".safetensors")).sort();
  const all: Located[] = [];
  for (const f of files) {
    const file = path.join(srcDir, f);
    const h = await readHeaderOf(file);
    for (const t of h.tensors) all.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], file, begin: h.dataStart + t.begin, end: h.dataStart + t.end });
  }
  const groups = splitEvenly(all, shards);
  const buf = Buffer.allocUnsafe(1 << 20);
  const handles = new Map<string, FileHandle>();
  try {
    for (const f of files) handles.set(path.join(srcDir, f), await open(path.join(srcDir, f), "r"));
    for (let i = 0; i < groups.length; i++) {
      const { header, order } = encodeHeader(groups[i]!, { format: "pt" });
      const byName = new Map(groups[i]!.map((t) => [t.name, t]));
      const out = await open(path.join(outDir, shardName(i, groups.length)), "w");
      try {
        await out.write(header);
        for (const name of order) {
          const t = byName.get(name)!;
          await copyRange(handles.get(t.file)!, out, t.begin, t.end, buf);
        }
      } finally {
        await out.close();
      }
    }
  } finally {
    for (const h of handles.values()) await h.close();
  }
  await writeIndex(outDir, groups);
  for (const f of await readdir(srcDir)) {
    if (f.endsWith(".safetensors") || f === "model.safetensors.index.json") continue;
    await copyFile(path.join(srcDir, f), path.join(outDir, f));
  }
  await writeFile(stamp, want);
  return outDir;
}
