/**
 * The tar reader of tar layers against tars written by real tools: GNU tar (`tar -cf`, its long-name
 * records) and Python's tarfile in pax and GNU formats (what modelpack-client and many packers use):
 * long paths, folders, empty files, every byte and sha256 as written.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PathSet } from "../../src/format/paths.js";
import { extractTar } from "../../src/modelpack/tar-layers.js";

let tmp: string;
let src: string;
const LONG = `${"deep/".repeat(30)}weights.bin`; // 161 characters: past ustar's 100 + 155
const files: Record<string, Buffer> = { "config.json": Buffer.from('{"a":1}\n'), "empty.txt": Buffer.alloc(0), [LONG]: Buffer.alloc(70_000, 3) };

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-tar-"));
  src = path.join(tmp, "src");
  for (const [p, b] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(src, p)), { recursive: true });
    await fs.writeFile(path.join(src, p), b);
  }
});
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

let n = 0;
async function extracted(tar: string): Promise<Map<string, string>> {
  const dir = path.join(tmp, `out-${n++}`);
  await fs.mkdir(dir);
  const got = await extractTar(createReadStream(tar) as AsyncIterable<Buffer>, dir, "test layer", new PathSet());
  const out = new Map<string, string>();
  for (const f of got) {
    expect(createHash("sha256").update(await fs.readFile(f.file)).digest("hex")).toBe(f.sha256);
    expect(f.file.startsWith(dir + path.sep)).toBe(true);
    out.set(f.path, f.sha256);
  }
  return out;
}

const want = () => new Map(Object.entries(files).map(([p, b]) => [p, createHash("sha256").update(b).digest("hex")]));

describe("extractTar reads real tools' tars", () => {
  it("GNU tar", async () => {
    const tar = path.join(tmp, "gnu.tar");
    execFileSync("tar", ["-cf", tar, "-C", src, "."]);
    expect(await extracted(tar)).toEqual(want());
  });

  for (const format of ["PAX_FORMAT", "GNU_FORMAT"]) {
    it(`Python tarfile, ${format}`, async () => {
      const tar = path.join(tmp, `${format}.tar`);
      execFileSync("python3", ["-c", `import tarfile,sys\nwith tarfile.open(sys.argv[1], "w", format=tarfile.${format}) as t: t.add(sys.argv[2], arcname="")`, tar, src]);
      expect(await extracted(tar)).toEqual(want());
    });
  }

  it("refuses a tar cut short inside an entry, in one line", async () => {
    const tar = path.join(tmp, "gnu2.tar");
    execFileSync("tar", ["-cf", tar, "-C", src, "."]);
    const cut = path.join(tmp, "cut.tar");
    const bytes = await fs.readFile(tar);
    await fs.writeFile(cut, bytes.subarray(0, bytes.indexOf(Buffer.alloc(512, 3)) + 1000));
    await expect(extracted(cut)).rejects.toThrow(/^test layer: the tar is cut short inside an entry$/);
  });
});
