// Package model reads the config.json of a Hugging Face checkpoint of the
// llama, qwen2 and phi3 families (LlamaForCausalLM, Qwen2ForCausalLM,
// Phi3ForCausalLM) into a Config that holds every value that changes the
// math, with the defaults transformers uses when a key is absent. From a
// Config it derives the tensors the checkpoint holds (names and shapes as
// HF writes them), the parameter count, and an estimate of the GPU memory of
// one LoRA training step.
//
// Anything the package does not implement (an unknown architecture, a RoPE
// scaling type other than default, llama3 and longrope, an activation other
// than SiLU, sliding-window attention in Qwen2) is an error that names the
// value, never a silent fallback to something else.
//
// A later step adds the decoder itself (forward and backward of the three
// families) to this package.
package model
