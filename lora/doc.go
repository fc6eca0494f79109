// Package lora holds LoRA adapters: their configuration, initialisation,
// scaling and merging, and the on-disk format of Hugging Face PEFT, so that
// an adapter trained by compass loads in PEFT and a PEFT adapter loads here.
//
// The package does not know the model: the caller passes the linear layers
// of its base model as a list of [Module], each with its full Hugging Face
// module name (the weight's name without ".weight") and dimensions.
//
// # The adapter
//
// A targeted linear layer y = x W^T with W [out, in] becomes
//
//	y = x W^T + scaling * (dropout(x) A^T) B^T,   A [r, in], B [out, r]
//
// with scaling = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA
// (use_rslora). Merging folds the update into the weight:
// W += scaling * B A. A starts as kaiming_uniform(a = sqrt 5), which is
// U(-1/sqrt(in), 1/sqrt(in)), and B as zero, so a new adapter changes
// nothing until it is trained. The weights are float32.
//
// # Files
//
// A directory holds adapter_config.json (PEFT's LoraConfig) and
// adapter_model.safetensors (metadata {"format": "pt"}) with two tensors per
// targeted module:
//
//	base_model.model.<module>.lora_A.weight   [r, in]
//	base_model.model.<module>.lora_B.weight   [out, r]
//
// PEFT removes the adapter name ("default") from the names it saves
// (save_and_load.py, get_peft_model_state_dict); Load accepts the names with
// or without the "base_model.model." prefix, as PEFT and transformers do
// when loading, and refuses any other tensor.
//
// # Which modules are adapted
//
// target_modules is matched against full module names exactly as PEFT's
// check_target_module_exists does (tuners/tuners_utils.py):
//
//   - a list of names: a module matches a name if it is that name or ends
//     with "." + name, so "q_proj" matches "model.layers.0.self_attn.q_proj"
//     and "self_attn.q_proj" does too, but "proj" matches neither; names are
//     not regular expressions;
//   - one string: a regular expression that must match the whole name;
//   - "all-linear" (any case): every linear layer but the output layer,
//     "lm_head". PEFT excludes the model's output embedding, which is
//     lm_head in the llama, qwen2 and phi3 families.
//
// exclude_modules, when set, takes modules out with the same rules.
//
// rank_pattern and alpha_pattern override r and lora_alpha per module. A
// key is a regular expression that must match the end of the module name,
// either all of it or a part that follows a "." (PEFT's get_pattern_key
// matches `(.*\.)?(key)$` from the start); the first key in the file's order
// that matches wins, so the patterns are kept in that order.
//
// Regular expressions are Go's (RE2) rather than Python's: the common
// syntax is the same, but Python's lookarounds and backreferences are
// refused when the config is read.
//
// # Phi-3's fused projections
//
// Phi-3 (Phi-4-mini) stores q, k and v as one linear layer, qkv_proj, and
// gate and up as gate_up_proj. PEFT adapts the module that exists: target
// "qkv_proj" and "gate_up_proj" (with "o_proj" and "down_proj" for the
// rest); "q_proj" or "gate_proj" match nothing on these models. The adapter
// then sits on the fused layer: its A is [r, hidden], and its B has the
// fused output rows, [(heads + 2 kv_heads) head_dim, r] for qkv_proj and
// [2 intermediate, r] for gate_up_proj, in the order of the fused weight.
// One rank and one scaling cover the whole fused layer.
//
// PEFT has default targets for llama and qwen2 (q_proj and v_proj) and
// none for phi3; compass always names its targets, see [DefaultTargets].
//
// # What is not supported
//
// Configs that ask for something this package does not compute are refused
// when read, naming the field: bias other than "none", fan_in_fan_out,
// modules_to_save, use_dora, lora_bias, layers_to_transform and
// layers_pattern, layer_replication, target_parameters,
// trainable_token_indices and the other LoRA variants (aLoRA, QALoRA, Arrow,
// BD-LoRA, VeLoRA, KaSA, MonteCLoRA), and initialisations that change the
// base weights (PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA), whose adapters do not
// apply to the original weights. Other fields are kept as read and written
// back unchanged.
package lora
