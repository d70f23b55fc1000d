// The unmodified Node SDK (@google/genai) against the Gemini Batch emulator.
// Each step prints one JSON document on stdout; tests/e2e/test_emulator_node_sdk.py drives the
// steps and moves the emulator's clock between them. Errors are reported, not thrown, so the
// test sees the SDK's own view of each failure (status, message, details).
import { GoogleGenAI } from "@google/genai";
import { readFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [step, ...args] = process.argv.slice(2);
const ai = new GoogleGenAI({
  apiKey: process.env.GEMINI_API_KEY,
  httpOptions: { baseUrl: process.env.EMULATOR_URL, apiVersion: process.env.API_VERSION },
});

function failure(err) {
  let body = null;
  try {
    body = JSON.parse(String(err.message).replace(/^got status: \d+ [^.]*\. /, ""));
  } catch {
    body = null;
  }
  return { name: err.name, status: err.status ?? null, message: String(err.message), body };
}

async function attempt(fn) {
  try {
    return { ok: await fn() };
  } catch (err) {
    return { error: failure(err) };
  }
}

const steps = {
  async models() {
    const names = [];
    const pager = await ai.models.list({ config: { pageSize: 5 } });
    for await (const m of pager) names.push({ name: m.name, actions: m.supportedActions ?? null });
    const one = await ai.models.get({ model: args[0] });
    return { names, got: { name: one.name, actions: one.supportedActions ?? null } };
  },
  async upload() {
    const data = await readFile(args[0]);
    const file = await ai.files.upload({
      file: new Blob([data], { type: "jsonl" }),
      config: { mimeType: "jsonl", displayName: "node input" },
    });
    return { name: file.name, uri: file.uri, sizeBytes: file.sizeBytes, mimeType: file.mimeType, state: file.state };
  },
  async createFile() {
    const job = await ai.batches.create({ model: args[0], src: args[1], config: { displayName: "node file batch" } });
    return { name: job.name, state: job.state, src: job.src ?? null };
  },
  async createInline() {
    const job = await ai.batches.create({
      model: args[0],
      src: [
        { contents: [{ role: "user", parts: [{ text: "A red cube" }] }], config: { responseModalities: ["TEXT", "IMAGE"] } },
        { contents: [{ role: "user", parts: [{ text: "A blue sphere" }] }], config: { responseModalities: ["TEXT", "IMAGE"] } },
      ],
      config: { displayName: "node inline batch" },
    });
    return { name: job.name, state: job.state };
  },
  async get() {
    return attempt(async () => {
      const job = await ai.batches.get({ name: args[0] });
      const inlined = job.dest?.inlinedResponses ?? null;
      return {
        name: job.name,
        state: job.state,
        destFile: job.dest?.fileName ?? null,
        inlined: inlined && inlined.map((r) => ({
          mime: r.response?.candidates?.[0]?.content?.parts?.find((p) => p.inlineData)?.inlineData?.mimeType ?? null,
          error: r.error ?? null,
        })),
        createTime: job.createTime ?? null,
        endTime: job.endTime ?? null,
      };
    });
  },
  async list() {
    const names = [];
    const pager = await ai.batches.list({ config: { pageSize: 1 } });
    for await (const job of pager) names.push(job.name);
    return { names };
  },
  async download() {
    const dir = await mkdtemp(join(tmpdir(), "node-sdk-"));
    const path = join(dir, "results.jsonl");
    await ai.files.download({ file: args[0], downloadPath: path });
    const text = await readFile(path, "utf8");
    return { lines: text.split("\n").filter((l) => l).map((l) => JSON.parse(l)).map((r) => ({ key: r.key, hasImage: JSON.stringify(r).includes('"image/png"'), error: r.error ?? null })) };
  },
  async cancel() {
    return attempt(async () => {
      await ai.batches.cancel({ name: args[0] });
      return (await ai.batches.get({ name: args[0] })).state;
    });
  },
  async del() {
    return attempt(async () => {
      await ai.batches.delete({ name: args[0] });
      return true;
    });
  },
};

const out = await steps[step]();
process.stdout.write(JSON.stringify(out) + "\n");
