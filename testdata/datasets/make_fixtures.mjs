// make_fixtures.mjs writes the small data sets in this folder with
// implementations other than compass's own, so that the tests read files
// the way real tools write them:
//
//   - the .jsonl sources are written here, one JSON object per line;
//   - .csv and .parquet come from DuckDB (npm @duckdb/node-api 1.5.6-r.1,
//     DuckDB v1.5.6), Parquet with ZSTD, Snappy and GZIP column compression
//     and several row groups;
//   - .npy come from NumPy (Debian's python3-numpy);
//   - .zst come from the zstd command-line tool (Debian's zstd).
//
// Run it from this folder, with @duckdb/node-api installed somewhere:
//
//   (cd /tmp/duck && npm install @duckdb/node-api@1.5.6-r.1)
//   DUCKDB_MODULES=/tmp/duck/node_modules node make_fixtures.mjs
//
// The rows mirror the real schemas: the Aya Dataset (CohereForAI/aya_dataset),
// Global-MMLU (CohereForAI/Global-MMLU, one config per language, no language
// column) and MMLU-ProX (li-lab/MMLU-ProX, options option_0..option_9, null
// where a question has fewer).

import { execFileSync } from "node:child_process";
import { writeFileSync, rmSync } from "node:fs";
import path from "node:path";

const modules = process.env.DUCKDB_MODULES;
if (!modules) {
  throw new Error("set DUCKDB_MODULES to a node_modules folder holding @duckdb/node-api");
}
const { DuckDBInstance } = await import(path.join(modules, "@duckdb/node-api/lib/index.js"));

const aya = [
  { inputs: "What is the capital of Kenya?", targets: "Nairobi is the capital of Kenya.", language: "English", language_code: "eng", annotation_type: "original-annotations", user_id: "8b0f3a2c1d" },
  { inputs: "ما هي عاصمة مصر؟", targets: "القاهرة هي عاصمة مصر.", language: "Standard Arabic", language_code: "arb", annotation_type: "original-annotations", user_id: "1f9e44a07b" },
  { inputs: "Mji mkuu wa Tanzania ni upi?", targets: "Dodoma ni mji mkuu wa Tanzania.", language: "Swahili", language_code: "swa", annotation_type: "re-annotations", user_id: "c3d2e1f0a9" },
  { inputs: "中国的首都是哪里？", targets: "北京是中国的首都。", language: "Simplified Chinese", language_code: "zho", annotation_type: "original-annotations", user_id: "77aa12bb34" },
  { inputs: "پایتخت ایران کجاست؟", targets: "تهران پایتخت ایران است.", language: "Iranian Persian", language_code: "pes", annotation_type: "re-annotations", user_id: "0e0d0c0b0a" },
  { inputs: "شنو هي العاصمة ديال المغرب؟", targets: "الرباط هي العاصمة ديال المغرب.", language: "Moroccan Arabic", language_code: "ary", annotation_type: "original-annotations", user_id: "5a5b5c5d5e" },
  { inputs: "Write a haiku about \"rain\".\nKeep it short, please.", targets: "Soft rain on the roof,\nthe garden drinks in silence,\nclouds move on, thank you.", language: "English", language_code: "eng", annotation_type: "original-annotations", user_id: "8b0f3a2c1d" },
];

const globalMMLU = [
  { sample_id: "high_school_geography/dev/0", subject: "high_school_geography", subject_category: "Humanities", question: "Mji mkuu wa Kenya ni upi? ", option_a: "Mombasa", option_b: "Nairobi", option_c: "Kisumu", option_d: "Nakuru", answer: "B", required_knowledge: "['geographic']", time_sensitive: "['No']", reference: "", culture: "['African']", region: "['Africa']", country: "['Kenya']", cultural_sensitivity_label: "CS", is_annotated: true },
  { sample_id: "elementary_mathematics/dev/1", subject: "elementary_mathematics", subject_category: "STEM", question: "Nini ni 7 mara 8?", option_a: "54", option_b: "56", option_c: "64", option_d: "48", answer: "B", required_knowledge: "[]", time_sensitive: "[]", reference: "", culture: "[]", region: "[]", country: "[]", cultural_sensitivity_label: "CA", is_annotated: true },
  { sample_id: "abstract_algebra/dev/2", subject: "abstract_algebra", subject_category: "STEM", question: "Tafuta kiwango cha kipengele 2 katika Z_5.", option_a: "1", option_b: "2", option_c: "4", option_d: "5", answer: "C", required_knowledge: null, time_sensitive: null, reference: null, culture: null, region: null, country: null, cultural_sensitivity_label: "-", is_annotated: false },
];

const opts = (xs) => Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`option_${i}`, i < xs.length ? xs[i] : null]));
const mmluProX = [
  { question_id: 70, question: "Ni kipi kati ya vifuatavyo ni mamalia?", ...opts(["Papa", "Pomboo", "Kasa", "Pweza", "Samaki", "Chura", "Nyoka", "Mjusi", "Kaa", "Konokono"]), answer: "B", answer_index: 1, cot_content: "A: Hebu tufikiria hatua kwa hatua. Pomboo ni mamalia. Jibu ni (B).", category: "biology", src: "ori_mmlu-high_school_biology", question_id_src: 2831 },
  { question_id: 71, question: "Thamani ya 2^10 ni ipi?", ...opts(["1000", "1024", "2048", "512"]), answer: "B", answer_index: 1, cot_content: "", category: "math", src: "stemez-Math", question_id_src: 7712 },
  { question_id: 72, question: "Sheria ya kwanza ya Newton inahusu nini?", ...opts(["Hali tuli", "Nguvu", "Kasi", "Nishati", "Joto", "Mwanga"]), answer: "A", answer_index: 0, cot_content: "", category: "physics", src: "theoremQA-Physics", question_id_src: 9120 },
];

const text = [
  { id: "t1", text: "The river rose after three days of rain.", language: "en" },
  { id: "t2", text: "Mto ulifurika baada ya siku tatu za mvua.", language: "sw" },
  { id: "t3", text: "Le fleuve a débordé après trois jours de pluie.", language: "fra" },
  { id: "t4", text: "Rio encheu depois de três dias de chuva.", language: "pt-BR" },
];

// Chat data as published for supervised fine-tuning (a "messages" list of
// {role, content}); Parquet keeps it as a list of structs, CSV as JSON text.
const chat = [
  { id: "c1", language: "en", messages: [{ role: "system", content: "You are a helpful assistant." }, { role: "user", content: "What is the capital of Kenya?" }, { role: "assistant", content: "Nairobi." }] },
  { id: "c2", language: "sw", messages: [{ role: "user", content: "Habari gani?" }, { role: "assistant", content: "Nzuri sana, asante!" }, { role: "user", content: "Mji mkuu wa Tanzania ni upi?" }, { role: "assistant", content: "Dodoma ni mji mkuu wa Tanzania." }] },
  { id: "c3", language: "zh", messages: [{ role: "user", content: "中国的首都是哪里？" }, { role: "assistant", content: "北京是中国的首都。" }] },
  { id: "c4", language: "en", messages: [{ role: "user", content: "Write \"rain\" in <b>bold</b>.\nThanks" }, { role: "assistant", content: "**rain** & <b>rain</b>" }] },
];

const jsonl = (rows) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
writeFileSync("aya.jsonl", jsonl(aya));
writeFileSync("global-mmlu-sw-dev.jsonl", jsonl(globalMMLU));
writeFileSync("mmlu-prox-sw-validation.jsonl", jsonl(mmluProX));
writeFileSync("text.jsonl", jsonl(text));
writeFileSync("chat.jsonl", jsonl(chat));

const db = await DuckDBInstance.create(":memory:");
const c = await db.connect();
const run = (sql) => c.run(sql);

await run(`CREATE TABLE aya AS SELECT * FROM read_json('aya.jsonl', columns = {inputs: 'VARCHAR', targets: 'VARCHAR', language: 'VARCHAR', language_code: 'VARCHAR', annotation_type: 'VARCHAR', user_id: 'VARCHAR'})`);
await run(`COPY aya TO 'aya.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 3)`);
await run(`COPY aya TO 'aya.csv' (FORMAT csv, HEADER true)`);

const gm = ["sample_id", "subject", "subject_category", "question", "option_a", "option_b", "option_c", "option_d", "answer", "required_knowledge", "time_sensitive", "reference", "culture", "region", "country", "cultural_sensitivity_label"];
const gmCols = gm.map((n) => `${n}: 'VARCHAR'`).join(", ") + ", is_annotated: 'BOOLEAN'";
await run(`CREATE TABLE gm AS SELECT * FROM read_json('global-mmlu-sw-dev.jsonl', columns = {${gmCols}})`);
await run(`COPY gm TO 'global-mmlu-sw-dev.parquet' (FORMAT parquet, COMPRESSION snappy)`);
await run(`COPY gm TO 'global-mmlu-sw-dev.csv' (FORMAT csv, HEADER true)`);

const px = "question_id: 'BIGINT', question: 'VARCHAR', " + Array.from({ length: 10 }, (_, i) => `option_${i}: 'VARCHAR'`).join(", ") +
  ", answer: 'VARCHAR', answer_index: 'BIGINT', cot_content: 'VARCHAR', category: 'VARCHAR', src: 'VARCHAR', question_id_src: 'BIGINT'";
await run(`CREATE TABLE px AS SELECT * FROM read_json('mmlu-prox-sw-validation.jsonl', columns = {${px}})`);
await run(`COPY px TO 'mmlu-prox-sw-validation.parquet' (FORMAT parquet, COMPRESSION gzip, ROW_GROUP_SIZE 2)`);

await run(`CREATE TABLE tx AS SELECT * FROM read_json('text.jsonl', columns = {id: 'VARCHAR', text: 'VARCHAR', language: 'VARCHAR'})`);
await run(`COPY tx TO 'text.csv' (FORMAT csv, HEADER true)`);
await run(`COPY tx TO 'text.parquet' (FORMAT parquet, COMPRESSION uncompressed)`);

await run(`CREATE TABLE ch AS SELECT * FROM read_json('chat.jsonl', columns = {id: 'VARCHAR', language: 'VARCHAR', messages: 'STRUCT(role VARCHAR, content VARCHAR)[]'})`);
await run(`COPY ch TO 'chat.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2)`);
await run(`COPY (SELECT id, language, to_json(messages) AS messages FROM ch) TO 'chat.csv' (FORMAT csv, HEADER true)`);

// Embeddings: 5 rows of dimension 4, as a FLOAT list, a DOUBLE list and a
// fixed-size FLOAT[4] array; the values are exact in float32.
await run(`CREATE TABLE emb AS SELECT 'e' || i AS id,
  [i * 0.5, -i, 1.0 / 4, i * i]::FLOAT[] AS embedding,
  [i * 0.5, -i, 1.0 / 4, i * i]::DOUBLE[] AS embedding64,
  [i * 0.5, -i, 1.0 / 4, i * i]::FLOAT[4] AS embedding_fixed
  FROM range(5) t(i)`);
await run(`COPY emb TO 'embeddings.parquet' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2)`);

for (const f of ["aya.jsonl", "aya.csv", "mmlu-prox-sw-validation.jsonl"]) {
  rmSync(f + ".zst", { force: true });
  execFileSync("zstd", ["-q", "-19", f, "-o", f + ".zst"]);
}

// The same 5 x 4 matrix as embeddings.parquet, from NumPy, in float32 and
// float64, and a Fortran-order one that readers must refuse.
execFileSync("/usr/bin/python3", ["-c", `
import numpy as np
m = np.array([[i * 0.5, -i, 0.25, i * i] for i in range(5)])
np.save('embeddings-f4.npy', m.astype('<f4'))
np.save('embeddings-f8.npy', m.astype('<f8'))
np.save('embeddings-fortran.npy', np.asfortranarray(m.astype('<f4')))
`]);
console.log("fixtures written");
