/**
 * A CNCF ModelPack fine-tune pulled after its base (issue 18): both pushed by the real oras as
 * ModelPack artifacts (one raw layer per file), cake pulls the base (not counted), then the fine-tune
 * through a counting proxy. cake reads each changed shard's header by Range and fetches only the
 * tensors it lacks; the unchanged ones are found among the base's blobs by samples, proven by the
 * layer digest. Target: bytes moved <= changed tensor bytes + 2 %.
 */
import { startCountingProxy } from "../../test/registry/counting-proxy.js";
import { startRegistry } from "../../test/registry/harness.js";
import { orasPushModelPack } from "../../test/modelpack/peers.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry, ensureOras } from "../lib/peers.js";
import { cake, medianOf, Scratch } from "../lib/proc.js";
import { mb, pct, secs, type Section } from "../lib/report.js";

export async function modelPackFineTune(models: Models, opts: Options): Promise<Section> {
  await ensureOras();
  checkRegistry();
  const base = await models.base();
  const ft = await models.fineTune();
  const scratch = new Scratch();
  try {
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const proxy = await startCountingProxy(reg.url);
    scratch.defer(() => proxy.close());
    const work = await scratch.dir("mp-push");
    await orasPushModelPack(base.dir, `${reg.host}/bench/mp-base:v1`, work);
    await orasPushModelPack(ft.dir, `${reg.host}/bench/mp-ft:v1`, work);
    const m = await medianOf(opts.runs, async () => {
      const d = await scratch.dir("mp-ft");
      await cake(["pull", "-q", `${proxy.host}/bench/mp-base:v1`], cakeEnv(undefined, d));
      proxy.reset();
      const t = await cake(["pull", "-q", `${proxy.host}/bench/mp-ft:v1`], cakeEnv(undefined, d));
      return { secs: t.secs, bytes: proxy.bytes("down", "GET", "blob") };
    });
    const limit = ft.changedBytes * 1.02;
    return {
      name: "mpfinetune",
      title: "ModelPack fine-tune after base",
      setup: [
        `base: ${mb(base.bytes)} MB Llama-shaped, ${base.shards} shards; fine-tune: the top ${opts.ftLayers} layers changed (${ft.changedTensors} tensors, ${mb(ft.changedBytes)} MB); both pushed by oras as CNCF ModelPack artifacts (one raw layer per file)`,
        `CNCF distribution on loopback behind the counting proxy (bytes = blob GET bodies); median of ${opts.runs} runs, each from an empty store: the base pulled (not counted), then the fine-tune`,
      ],
      header: ["client", "MB moved for the fine-tune", "of changed tensor bytes", "seconds"],
      rows: [["cake pull mp-base, then mp-ft", mb(m.bytes), pct(m.bytes / ft.changedBytes), secs(m.secs)]],
      targets: [{ what: "ModelPack fine-tune pull after base moves <= changed tensor bytes + 2 %", measured: `${mb(m.bytes)} MB for ${mb(ft.changedBytes)} MB changed`, met: m.bytes <= limit }],
      notes: ["Beyond the changed tensors: one 64 KiB header read per changed shard, the small files, and 4 KiB sample windows per sampled tensor (speculate.ts)."],
    };
  } finally {
    await scratch.cleanup();
  }
}
