// Package encoder is the multilingual sentence encoders COMPASS embeds
// texts with: XLM-RoBERTa (XLMRobertaModel, e.g. intfloat/multilingual-e5-base)
// and BERT (BertModel, e.g. intfloat/multilingual-e5-small, LaBSE), loaded
// from a Hugging Face checkpoint directory (config.json and *.safetensors)
// and run forward on a tensor.Backend as HF's modeling_xlm_roberta and
// modeling_bert do: absolute position embeddings (XLM-R's offset by the
// padding index), token type 0, post-LayerNorm blocks with exact-erf GELU,
// bidirectional attention with the padding masked out of the keys. Pool
// turns the last hidden states into one vector per text (mean over the
// text's tokens or its first token, optionally unit length). Forward only:
// the encoder is frozen.
package encoder
