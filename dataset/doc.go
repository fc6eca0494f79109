// Package dataset reads the data sets compass selects from, trains and
// evaluates on: JSONL, CSV (or TSV) and Parquet files, plain or
// zstd-compressed, as a stream of records, so that a file larger than
// memory is never loaded whole. It also lays tokenized training examples
// out in rows and batches (see Training rows below).
//
// # Formats
//
// The format comes from the file name, after a .zst or .zstd suffix is
// taken off: .jsonl, .ndjson and .json are JSON Lines (one object per
// line; blank lines are skipped), .csv and .tsv are comma- and
// tab-separated values with a header row, .parquet and .pq are Parquet.
// Options.Format overrides the name. A file of any other name is
// recognised by its first bytes: "PAR1" is Parquet, "{" JSON Lines.
//
// A file is zstd-compressed when its name ends in .zst or .zstd or when it
// starts with the zstd magic number; it is decompressed as it is read. A
// compressed Parquet file is first decompressed into a temporary file,
// because Parquet is read from its end.
//
// Values become text as they are written: JSON numbers keep their
// literal, Parquet integers and floats their shortest decimal form. JSON
// null, a missing key and a Parquet null are absent. JSON arrays and
// objects are kept in Fields as JSON but cannot be a text field. A Parquet
// column that is a list of structs of scalars (chat messages; the LIST
// layout Arrow, DuckDB and Spark write, or a bare repeated group) is kept
// as a JSON array of objects, as JSON Lines would hold it; other Parquet
// lists and groups are left out of Fields.
//
// # Schemas
//
// A schema says which columns a record has and how they become its Text,
// ID and Language. Options.Schema names one; SchemaAuto picks it from the
// columns present (the CSV header, the Parquet schema, or the keys of the
// first JSON object), and fails when none or more than one fits.
//
//	schema       required columns                  Text
//	aya          inputs, targets                   inputs + "\n" + targets
//	chat         messages                          the messages' contents, joined by "\n"
//	global-mmlu  question, option_a .. option_d    question (trimmed), then "\nA. " + option_a ... "\nD. " + option_d
//	mmlu-prox    question, option_0                question, then "\nA. " + option_0 ... "\nJ. " + option_9, skipping absent options
//	text         text                              text
//
// The multiple-choice Text is the lm-evaluation-harness prompt of the
// benchmark without its fixed parts: Global-MMLU's prompt is the question,
// the "A. ..." lines and "Answer:"; MMLU-ProX's puts localised "Question:"
// and "Options:" headers around the same lines and ends with a localised
// "Answer: Let's think step by step.". Those parts are the same for every
// question of a language, so they would only move every embedding the
// same way. The answer itself is never part of Text.
//
// Column names are those of the published data sets:
//
//   - Aya Dataset (CohereForAI/aya_dataset): inputs, targets, language (a
//     name, e.g. "Standard Arabic"), language_code (ISO 639-3, e.g. "arb"),
//     annotation_type, user_id.
//   - Global-MMLU and Global-MMLU-Lite (CohereForAI/Global-MMLU, one config
//     per language, splits dev and test): sample_id, subject,
//     subject_category, question, option_a .. option_d, answer (A-D),
//     required_knowledge, time_sensitive, reference, culture, region,
//     country, cultural_sensitivity_label (CS, CA or -), is_annotated.
//   - MMLU-ProX and MMLU-ProX-Lite (li-lab/MMLU-ProX, one config per
//     language, splits validation and test): question_id, question,
//     option_0 .. option_9 (null where a question has fewer options),
//     answer (A-J), answer_index, cot_content, category, src,
//     question_id_src.
//   - chat: messages, a list of {"role", "content"} objects (the layout
//     of supervised fine-tuning sets such as HuggingFaceH4/ultrachat_200k
//     and the TRL conversational format), and optionally language and id.
//     In JSON Lines it is an array; in Parquet a list of structs or a
//     string holding the JSON; in CSV a cell holding the JSON. The
//     conversation is Record.Messages: every message needs a non-empty
//     role and a content, both strings; other keys are ignored.
//   - text: text, and optionally language and id.
//
// A record's ID is the data's own identifier where the schema has one
// (sample_id for Global-MMLU, question_id for MMLU-ProX, id for aya, chat
// and text when present), and otherwise the file's base name and the record's
// line (row, for Parquet): "train.jsonl:12". IDs are unique within a file
// and language; Global-MMLU's sample_id is the same question in every
// language.
//
// # Languages
//
// A record's Language is, in this order: its language_code column (aya),
// its language column, Options.Language, or the name of the file's folder
// when that is a language code (Hugging Face lays out per-language
// configs as sw/test-00000-of-00001.parquet); else it is empty. Every one
// is normalised by NormalizeLanguage: ISO 639-1 where the language has a
// 639-1 code, ISO 639-3 otherwise. A value NormalizeLanguage does not know
// is kept, trimmed and lowercased.
//
// # Bad rows
//
// A row that cannot be read (a line that is not a JSON object, a CSV
// record with the wrong number of fields) or that does not fit the schema
// (a missing or null required column, an array where text is needed,
// invalid UTF-8, an empty Text) is an error naming the file and line (or
// row). With Options.SkipBad such rows are counted (Reader.Skipped) and
// skipped instead. A damaged file (zstd or Parquet that cannot be
// decoded) or a read error always stops the reader.
//
// # Training rows
//
// Training sees Examples: token ids and, per token, whether it is a target
// the model must predict from the tokens before it (the tokenizer lives
// above this package, in engine). They become Rows of a fixed length:
//
//   - Fit makes long examples fit: cut to the row length (LongCut, the
//     default) or split into chunks that overlap by one token (LongSplit),
//     so that each target is predicted in exactly one chunk; it counts what
//     was cut, split and lost (FitStats).
//   - Pack fills rows with several examples (first-fit decreasing: longest
//     first, each in the first row with room), never splitting one across
//     rows; Pad puts one example in each row. Either way the end of a row
//     is padding, a document of its own in Row.DocLens, and Labels[t] is
//     token t+1 of the same document when that is a target, otherwise
//     IgnoreLabel (-100): labels never cross from one document to the next,
//     so the last token of each document predicts nothing.
//   - Batches groups rows of similar real length into micro-batches and
//     shuffles their order, from (seed, epoch) with a PCG generator:
//     the same seed and epoch give the same batches.
//   - Split holds out a seeded share of the examples for evaluation,
//     keeping the chunks of one record together.
package dataset
